import { resolveConfig } from "../config";
import { connectDatabase, type DatabaseClient } from "../db/client";
import {
  dropSetAside,
  listSetAside,
  releaseSetAside,
  type SetAsideEntry,
  type SetAsideTarget,
} from "../db/outbox-set-aside";
import { JetfnError } from "../support/errors";
import { createLogger } from "../support/logger";
import { printJson, printJsonLines } from "./output";
import { resolveDatabaseUrl, type StartedService } from "./services";
import { type Column, formatTable } from "./table";

/** Options of `jetfn outbox`. */
export interface OutboxCommandOptions {
  json?: boolean;
  limit?: string;
}

/** Options of `jetfn outbox release` and `jetfn outbox drop`. */
export interface OutboxChangeOptions {
  all?: boolean;
  json?: boolean;
}

/** Release re-checks bodies against NATS's default `max_payload`; the relay checks the server's own. */
const DEFAULT_MAX_PAYLOAD = 1_048_576;

const COLUMNS: Column<SetAsideEntry>[] = [
  { header: "ID", value: (row) => row.id },
  { header: "SUBJECT", value: (row) => shorten(row.subject, 60) },
  { header: "FROM", value: (row) => row.function ?? "app" },
  { header: "BYTES", value: (row) => String(row.bodyBytes), right: true },
  { header: "SET ASIDE", value: (row) => row.setAsideAt },
  { header: "REASON", value: (row) => shorten(row.reason, 100) },
];

/** `jetfn outbox`: outbox rows the relay set aside instead of publishing, newest first. */
export async function outboxCommand(options: OutboxCommandOptions): Promise<void> {
  await withDatabase(async (database) => {
    const limit = options.limit === undefined ? undefined : Number(options.limit);
    if (limit !== undefined && (!Number.isInteger(limit) || limit < 1)) {
      throw new JetfnError("E_INPUT_INVALID", `--limit must be a positive whole number, not ${options.limit}`);
    }
    const rows = await listSetAside(database.sql, limit);
    if (options.json) printJsonLines(rows);
    else if (rows.length === 0) process.stdout.write("no outbox rows set aside\n");
    else process.stdout.write(formatTable(COLUMNS, rows));
  });
}

/** `jetfn outbox release <id> | --all`: moves set-aside rows back into the outbox, if they meet the rules. */
export async function outboxReleaseCommand(id: string | undefined, options: OutboxChangeOptions): Promise<void> {
  const target = targetOf(id, options);
  await withDatabase(async (database) => {
    const result = await releaseSetAside(database.sql, target, { maxPayload: DEFAULT_MAX_PAYLOAD });
    if (options.json) printJson(result);
    else {
      for (const released of result.released) process.stdout.write(`released ${released}\n`);
      for (const refused of result.refused) process.stdout.write(`kept ${refused.id}: ${refused.reason}\n`);
      if (result.released.length + result.refused.length === 0) process.stdout.write("no outbox rows set aside\n");
    }
    if (result.refused.length > 0) {
      throw new JetfnError("E_OUTBOX_ROW_INVALID", `${result.refused.length} row(s) still refused, kept aside`);
    }
  });
}

/** `jetfn outbox drop <id> | --all`: deletes set-aside rows for good. */
export async function outboxDropCommand(id: string | undefined, options: OutboxChangeOptions): Promise<void> {
  const target = targetOf(id, options);
  await withDatabase(async (database) => {
    const dropped = await dropSetAside(database.sql, target);
    if (options.json) printJson({ dropped });
    else process.stdout.write(dropped.length === 0 ? "no outbox rows set aside\n" : `dropped ${dropped.join(", ")}\n`);
  });
}

function targetOf(id: string | undefined, options: OutboxChangeOptions): SetAsideTarget {
  if (id !== undefined && !options.all) return { id };
  if (id === undefined && options.all) return { all: true };
  throw new JetfnError("E_INPUT_INVALID", "name one set-aside row's id, or --all");
}

function shorten(text: string, length: number): string {
  const line = text.replace(/\s+/g, " ");
  return line.length > length ? `${line.slice(0, length - 1)}…` : line;
}

/** Runs with a database connection (DATABASE_URL, or the embedded Postgres of `jetfn dev`). */
async function withDatabase(run: (database: DatabaseClient) => Promise<void>): Promise<void> {
  const config = resolveConfig();
  const started: StartedService[] = [];
  const logger = createLogger({ level: "warn", destination: process.stderr });
  const url = await resolveDatabaseUrl(config, logger, started, false);
  const database = connectDatabase({ url, poolSize: 2 });
  try {
    await run(database);
  } finally {
    await database.close();
  }
}
