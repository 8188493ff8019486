import { Command, CommanderError, InvalidArgumentError } from "commander";
import { DEFAULT_DASHBOARD_PORT } from "../dashboard/default-port";
import { JetfnError } from "../support/errors";
import { exitQuietlyOnClosedOutput } from "./closed-output";
import { fail, parseDurationOption } from "./output";

/**
 * A command's code is loaded when it runs, so `jetfn --help` or a mistyped flag does not load the
 * runtime, the database driver and esbuild first: compiled, `--help` takes a tenth of the CPU time.
 */
function lazy<A extends unknown[]>(load: () => Promise<(...args: A) => unknown>): (...args: A) => Promise<void> {
  return async (...args) => {
    await (await load())(...args);
  };
}

const program = new Command("jetfn")
  .description("Serverless-style functions on NATS JetStream, with every database write audited.")
  // Commander's errors (unknown flag, missing argument) end like every other failure: one line
  // `jetfn: E_INPUT_INVALID: <reason>`, not the whole usage. Set before the commands, which inherit it.
  .exitOverride()
  .configureOutput({ outputError: () => {} });

program
  .command("dev")
  .description(
    "run the runtime for development: watch functions/, readable logs, embedded Postgres and NATS when missing",
  )
  .option("--metrics-port <port>", "serve Prometheus metrics and health checks on this port", parsePort)
  .option("--metrics-host <host>", "where metrics and health checks listen (default: 127.0.0.1)")
  .option("--dashboard <port>", "serve the dashboard on this port", parsePort, DEFAULT_DASHBOARD_PORT)
  .option("--no-dashboard", "do not serve the dashboard")
  .action(async (options: { metricsPort?: number; metricsHost?: string; dashboard: number | false }) => {
    const { serve } = await import("./serve");
    await serve({
      development: true,
      metricsPort: options.metricsPort,
      metricsHost: options.metricsHost,
      dashboardPort: options.dashboard,
    });
  });

program
  .command("start")
  .description(
    "run the runtime for production: JSON logs, DATABASE_URL and NATS_URL required, migrations must be applied",
  )
  .option("--metrics-port <port>", "serve Prometheus metrics and health checks on this port", parsePort)
  .option("--metrics-host <host>", "where metrics and health checks listen (default: 127.0.0.1)")
  .option("--dashboard <port>", "serve the dashboard on this port (off by default)", parsePort)
  .option(
    "--dashboard-host <host>",
    "where the dashboard listens; off loopback every page needs the token",
    "127.0.0.1",
  )
  .action(
    async (options: { metricsPort?: number; metricsHost?: string; dashboard?: number; dashboardHost: string }) => {
      const { serve } = await import("./serve");
      await serve({
        development: false,
        metricsPort: options.metricsPort,
        metricsHost: options.metricsHost,
        dashboardPort: options.dashboard,
        dashboardHost: options.dashboardHost,
      });
    },
  );

program
  .command("call")
  .description("call a function (request-reply) and print its JSON result")
  .argument("<fn>", "function name, e.g. send-mail or billing.charge")
  .argument("[json]", "input as JSON; - reads standard input")
  .option("--timeout <duration>", "how long to wait for the reply (default: 30s)", parseTimeout)
  .action(lazy(async () => (await import("./call")).callCommand));

program
  .command("enqueue")
  .description("enqueue a job (fire-and-forget) and print its id")
  .argument("<fn>", "function name")
  .argument("[json]", "input as JSON; - reads standard input")
  .option("--wait", "show progress, then print the result")
  .option("--id <id>", "invocation id to use (repeats within the duplicate window are dropped)")
  .option("--delay <duration>", "run the job no sooner than this from now, e.g. 10m")
  .option("--at <time>", "run the job no sooner than this ISO 8601 time, e.g. 2030-01-01T09:00:00Z")
  .option("--priority <n>", "0 (default) to 3: with a backlog, higher-priority jobs start first")
  .option("--singleton <key>", "enqueue only if no job of this function with this key is queued or running")
  .option("--debounce <key>", "run only the last of the jobs with this key enqueued within --debounce-period")
  .option("--debounce-period <duration>", "with --debounce: how long to wait for a later job, e.g. 30s")
  .option(
    "--debounce-max-wait <duration>",
    "with --debounce: run the latest job at most this long after the first of a burst, e.g. 5m",
  )
  .option("--timeout <duration>", "with --wait: how long to wait (default: 1h)", parseTimeout)
  .option("--json", "print JSON (with --wait: the whole status)")
  .action(lazy(async () => (await import("./enqueue")).enqueueCommand));

program
  .command("cancel")
  .description("cancel a job: not started, it never runs; running, it is aborted and rolled back")
  .argument("<id>", "invocation id")
  .option("--reason <text>", "why (kept with the job, given to a running handler's ctx.signal)")
  .option("--json", "print JSON")
  .action(lazy(async () => (await import("./cancel")).cancelCommand));

program
  .command("status")
  .description("show an invocation's status, attempts, progress, result or errors")
  .argument("<id>", "invocation id")
  .option("--watch", "follow the job until it ends, drawing its progress")
  .option("--json", "print JSON")
  .action(lazy(async () => (await import("./status")).statusCommand));

program
  .command("audit")
  .description("the audit log, newest first; `audit <invocation-id>`, `audit verify`, `audit prune --older-than 90d`")
  .argument("[target]", "an invocation id (its changes, by step and table), verify (the hash chain) or prune")
  .option("--function <fn>", "changes made by this function")
  .option("--outside", "changes made outside any function")
  .option("--table <table>", "changes to this table (table or schema.table)")
  .option("--invocation <id>", "changes made by this invocation")
  .option("--row <pk>", "with --table: the history of one row (its key, or a JSON object of key columns)")
  .option("--since <when>", "a duration ago (2h) or a time")
  .option("--until <when>", "a duration ago or a time")
  .option("--limit <n>", "at most this many changes", "50")
  .option(
    "--check",
    "list tables of the audited schemas that are not audited, and writes by the runtime's role outside any invocation",
  )
  .option("--runtime-role <name>", "with --check: the role the runtime connects as", "jetfn_runtime")
  .option("--older-than <duration>", "with prune: drop sealed months older than this")
  .option("--step <key>", "with an invocation id: only this durable step's changes (its exact key, e.g. notify#2)")
  .option("--json", "one JSON object per line")
  .action(lazy(async () => (await import("./audit")).auditCommand));

program
  .command("ls")
  .description("deployed functions across all runtimes: instances, uptime, served, memory, queue, rate, time left")
  .option("--watch", "refresh every 2 seconds")
  .option("--json", "one JSON object per function per line")
  .action(lazy(async () => (await import("./ls")).lsCommand));

program
  .command("stats")
  .description("per function across all runtimes: count, mean/median/p99 duration, errors by kind")
  .argument("[fn]", "only this function")
  .option("--json", "one JSON object per function per line")
  .action(lazy(async () => (await import("./stats")).statsCommand));

const dlq = program
  .command("dlq")
  .description("dead jobs (not yet retried), newest first: id, function, attempts, last error, when")
  .argument("[fn]", "only this function's")
  .option("--limit <n>", "at most this many", "100")
  .option("--json", "one JSON object per line")
  .action(lazy(async () => (await import("./dlq")).dlqCommand));

dlq
  .command("drop")
  .description("discard a dead job (recorded as dropped, with when)")
  .argument("<id>", "the dead job's id")
  .option("--json", "print JSON")
  .action(lazy(async () => (await import("./dlq")).dlqDropCommand));

const outbox = program
  .command("outbox")
  .description("outbox rows set aside instead of published (they break the outbox rules), newest first, with why")
  .option("--limit <n>", "at most this many", "100")
  .option("--json", "one JSON object per line")
  .action(lazy(async () => (await import("./outbox")).outboxCommand));

outbox
  .command("release")
  .description("move set-aside rows back into the outbox, to be published, if they meet the rules now")
  .argument("[id]", "the row's id")
  .option("--all", "every set-aside row")
  .option("--json", "print JSON")
  // The parent's --json takes the flag wherever it stands: read it with the parent's options.
  .action(async (id: string | undefined, _options, command: Command) => {
    const { outboxReleaseCommand } = await import("./outbox");
    await outboxReleaseCommand(id, command.optsWithGlobals());
  });

outbox
  .command("drop")
  .description("delete set-aside rows for good")
  .argument("[id]", "the row's id")
  .option("--all", "every set-aside row")
  .option("--json", "print JSON")
  .action(async (id: string | undefined, _options, command: Command) => {
    const { outboxDropCommand } = await import("./outbox");
    await outboxDropCommand(id, command.optsWithGlobals());
  });

program
  .command("retry")
  .description(
    "run dead jobs again: those with durable steps resume under their id, others as fresh jobs linked to the originals (Jetfn-Retry-Of)",
  )
  .argument("[id]", "the dead job's id")
  .option("--function <fn>", "with --all: the function whose dead jobs to retry")
  .option("--all", "every dead job of --function")
  .option("--fresh", "start jobs with durable steps afresh too, as new jobs whose steps all run again")
  .option("--json", "one JSON object per retried job per line")
  .action(lazy(async () => (await import("./retry")).retryCommand));

program
  .command("replay")
  .description("re-publish a function's stored jobs (stream history) as new jobs, e.g. into a local runtime")
  .argument("<fn>", "function name")
  .requiredOption("--since <duration>", "jobs stored this long ago or later, e.g. 2h")
  .option("--until <when>", "jobs stored up to this time, or this long ago (default: now)")
  .option("--to <url>", "NATS URL to publish to (default: NATS_URL)")
  .option("--json", "print JSON")
  .action(lazy(async () => (await import("./replay")).replayCommand));

program
  .command("types")
  .description("write jetfn-functions.ts: every function's type by name, for compile-time checked calls")
  .option("--out <file>", "where to write it (default: next to the functions folder)")
  .action(lazy(async () => (await import("./types")).typesCommand));

program
  .command("migrate")
  .description(
    "apply pending migrations, jetfn's then the app's (JETFN_MIGRATIONS), to DATABASE_URL or the embedded Postgres",
  )
  .option("--json", "print JSON")
  .action(lazy(async () => (await import("./migrate")).migrateCommand));

function parsePort(value: string): number {
  const port = Number(value);
  if (!Number.isInteger(port) || port < 1 || port > 65_535)
    throw new InvalidArgumentError("must be a port from 1 to 65535");
  return port;
}

function parseTimeout(value: string): number {
  return parseDurationOption("--timeout", value);
}

/** Help and version exit 0 as commander would; its usage errors become input errors. */
function failCommand(error: unknown): never {
  if (error instanceof CommanderError) {
    // Help and version were printed already (with no command, the help goes to standard error).
    if (error.exitCode === 0 || error.code === "commander.help") process.exit(error.exitCode);
    fail(new JetfnError("E_INPUT_INVALID", describeUsageError(error)));
  }
  return fail(error);
}

/** `error: unknown option '--nope'` -> `unknown option '--nope' (see jetfn <command> --help)`. */
function describeUsageError(error: CommanderError): string {
  return `${error.message.replace(/^error: /, "").split("\n")[0]} (see jetfn --help)`;
}

exitQuietlyOnClosedOutput();
program.parseAsync(process.argv).catch(failCommand);
