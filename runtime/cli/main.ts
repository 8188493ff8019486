import { Command } from "commander";
import { auditCommand } from "./audit";
import { callCommand } from "./call";
import { enqueueCommand } from "./enqueue";
import { migrateCommand } from "./migrate";
import { fail } from "./output";
import { serve } from "./serve";
import { statusCommand } from "./status";

const program = new Command("jetfn")
  .description("Serverless-style functions on NATS JetStream, with every database write audited.")
  .showHelpAfterError();

program
  .command("dev")
  .description(
    "run the runtime for development: watch functions/, readable logs, embedded Postgres and NATS when missing",
  )
  .action(() => serve({ development: true }));

program
  .command("start")
  .description(
    "run the runtime for production: JSON logs, DATABASE_URL and NATS_URL required, migrations must be applied",
  )
  .action(() => serve({ development: false }));

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
  .option("--timeout <duration>", "with --wait: how long to wait", "1h")
  .option("--json", "print JSON (with --wait: the whole status)")
  .action(enqueueCommand);

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
  .command("migrate")
  .description("apply pending migrations (schema/migrations) to DATABASE_URL or the embedded Postgres")
  .option("--json", "print JSON")
  .action(migrateCommand);

program.parseAsync(process.argv).catch((error: unknown) => fail(error));
