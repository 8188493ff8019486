import { Command, InvalidArgumentError } from "commander";
import { DEFAULT_DASHBOARD_PORT } from "../dashboard/server";
import { auditCommand } from "./audit";
import { callCommand } from "./call";
import { cancelCommand } from "./cancel";
import { dlqCommand, dlqDropCommand } from "./dlq";
import { enqueueCommand } from "./enqueue";
import { lsCommand } from "./ls";
import { migrateCommand } from "./migrate";
import { outboxCommand, outboxDropCommand, outboxReleaseCommand } from "./outbox";
import { fail } from "./output";
import { replayCommand } from "./replay";
import { retryCommand } from "./retry";
import { serve } from "./serve";
import { statsCommand } from "./stats";
import { statusCommand } from "./status";
import { typesCommand } from "./types";

const program = new Command("jetfn")
  .description("Serverless-style functions on NATS JetStream, with every database write audited.")
  .showHelpAfterError();

program
  .command("dev")
  .description(
    "run the runtime for development: watch functions/, readable logs, embedded Postgres and NATS when missing",
  )
  .option("--metrics-port <port>", "serve Prometheus metrics on 127.0.0.1:<port>/metrics", parsePort)
  .option("--dashboard <port>", "serve the dashboard on this port", parsePort, DEFAULT_DASHBOARD_PORT)
  .option("--no-dashboard", "do not serve the dashboard")
  .action((options: { metricsPort?: number; dashboard: number | false }) =>
    serve({ development: true, metricsPort: options.metricsPort, dashboardPort: options.dashboard }),
  );

program
  .command("start")
  .description(
    "run the runtime for production: JSON logs, DATABASE_URL and NATS_URL required, migrations must be applied",
  )
  .option("--metrics-port <port>", "serve Prometheus metrics on 127.0.0.1:<port>/metrics", parsePort)
  .option("--dashboard <port>", "serve the dashboard on this port (off by default)", parsePort)
  .option(
    "--dashboard-host <host>",
    "where the dashboard listens; off loopback every page needs the token",
    "127.0.0.1",
  )
  .action((options: { metricsPort?: number; dashboard?: number; dashboardHost: string }) =>
    serve({
      development: false,
      metricsPort: options.metricsPort,
      dashboardPort: options.dashboard,
      dashboardHost: options.dashboardHost,
    }),
  );

program
  .command("call")
  .description("call a function (request-reply) and print its JSON result")
  .argument("<fn>", "function name, e.g. send-mail or billing.charge")
  .argument("[json]", "input as JSON; - reads standard input")
  .option("--timeout <duration>", "how long to wait for the reply", "30s")
  .action(callCommand);

program
  .command("enqueue")
  .description("enqueue a job (fire-and-forget) and print its id")
  .argument("<fn>", "function name")
  .argument("[json]", "input as JSON; - reads standard input")
  .option("--wait", "show progress, then print the result")
  .option("--id <id>", "invocation id to use (repeats within the duplicate window are dropped)")
  .option("--delay <duration>", "run the job no sooner than this from now, e.g. 10m")
  .option("--at <time>", "run the job no sooner than this ISO 8601 time, e.g. 2030-01-01T09:00:00Z")
  .option("--timeout <duration>", "with --wait: how long to wait", "1h")
  .option("--json", "print JSON (with --wait: the whole status)")
  .action(enqueueCommand);

program
  .command("cancel")
  .description("cancel a job: not started, it never runs; running, it is aborted and rolled back")
  .argument("<id>", "invocation id")
  .option("--reason <text>", "why (kept with the job, given to a running handler's ctx.signal)")
  .option("--json", "print JSON")
  .action(cancelCommand);

program
  .command("status")
  .description("show an invocation's status, attempts, progress, result or errors")
  .argument("<id>", "invocation id")
  .option("--watch", "follow the job until it ends, drawing its progress")
  .option("--json", "print JSON")
  .action(statusCommand);

program
  .command("audit")
  .description("the audit log, newest first; `audit <invocation-id>`, `audit verify`, `audit prune --older-than 90d`")
  .argument("[target]", "an invocation id (its changes, by table), verify (the hash chain) or prune")
  .option("--function <fn>", "changes made by this function")
  .option("--outside", "changes made outside any function")
  .option("--table <table>", "changes to this table (table or schema.table)")
  .option("--invocation <id>", "changes made by this invocation")
  .option("--row <pk>", "with --table: the history of one row (its key, or a JSON object of key columns)")
  .option("--since <when>", "a duration ago (2h) or a time")
  .option("--until <when>", "a duration ago or a time")
  .option("--limit <n>", "at most this many changes", "50")
  .option("--check", "list tables of the audited schemas that are not audited")
  .option("--older-than <duration>", "with prune: drop sealed months older than this")
  .option("--json", "one JSON object per line")
  .action(auditCommand);

program
  .command("ls")
  .description("deployed functions across all runtimes: instances, uptime, served, memory, queue, rate, time left")
  .option("--watch", "refresh every 2 seconds")
  .option("--json", "one JSON object per function per line")
  .action(lsCommand);

program
  .command("stats")
  .description("per function across all runtimes: count, mean/median/p99 duration, errors by kind")
  .argument("[fn]", "only this function")
  .option("--json", "one JSON object per function per line")
  .action(statsCommand);

const dlq = program
  .command("dlq")
  .description("dead jobs (not yet retried), newest first: id, function, attempts, last error, when")
  .argument("[fn]", "only this function's")
  .option("--limit <n>", "at most this many", "100")
  .option("--json", "one JSON object per line")
  .action(dlqCommand);

dlq
  .command("drop")
  .description("discard a dead job (recorded as dropped, with when)")
  .argument("<id>", "the dead job's id")
  .option("--json", "print JSON")
  .action(dlqDropCommand);

const outbox = program
  .command("outbox")
  .description("outbox rows set aside instead of published (they break the outbox rules), newest first, with why")
  .option("--limit <n>", "at most this many", "100")
  .option("--json", "one JSON object per line")
  .action(outboxCommand);

outbox
  .command("release")
  .description("move set-aside rows back into the outbox, to be published, if they meet the rules now")
  .argument("[id]", "the row's id")
  .option("--all", "every set-aside row")
  .option("--json", "print JSON")
  // The parent's --json takes the flag wherever it stands: read it with the parent's options.
  .action((id: string | undefined, _options, command: Command) => outboxReleaseCommand(id, command.optsWithGlobals()));

outbox
  .command("drop")
  .description("delete set-aside rows for good")
  .argument("[id]", "the row's id")
  .option("--all", "every set-aside row")
  .option("--json", "print JSON")
  .action((id: string | undefined, _options, command: Command) => outboxDropCommand(id, command.optsWithGlobals()));

program
  .command("retry")
  .description("run dead jobs again as fresh jobs linked to the originals (Jetfn-Retry-Of)")
  .argument("[id]", "the dead job's id")
  .option("--function <fn>", "with --all: the function whose dead jobs to retry")
  .option("--all", "every dead job of --function")
  .option("--json", "one JSON object per retried job per line")
  .action(retryCommand);

program
  .command("replay")
  .description("re-publish a function's stored jobs (stream history) as new jobs, e.g. into a local runtime")
  .argument("<fn>", "function name")
  .requiredOption("--since <duration>", "jobs stored this long ago or later, e.g. 2h")
  .option("--until <when>", "jobs stored up to this time, or this long ago (default: now)")
  .option("--to <url>", "NATS URL to publish to (default: NATS_URL)")
  .option("--json", "print JSON")
  .action(replayCommand);

program
  .command("types")
  .description("write jetfn-functions.ts: every function's type by name, for compile-time checked calls")
  .option("--out <file>", "where to write it (default: next to the functions folder)")
  .action(typesCommand);

program
  .command("migrate")
  .description("apply pending migrations (schema/migrations) to DATABASE_URL or the embedded Postgres")
  .option("--json", "print JSON")
  .action(migrateCommand);

function parsePort(value: string): number {
  const port = Number(value);
  if (!Number.isInteger(port) || port < 1 || port > 65_535)
    throw new InvalidArgumentError("must be a port from 1 to 65535");
  return port;
}

program.parseAsync(process.argv).catch((error: unknown) => fail(error));
