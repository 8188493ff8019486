import {
  type AuditFilter,
  auditSealStatus,
  invocationChanges,
  listAuditEntries,
  rowHistory,
  verifyAuditChain,
} from "../audit-queries";
import { resolveConfig } from "../config";
import { uncoveredTables } from "../db/audit-coverage";
import { connectDatabase, type DatabaseClient } from "../db/client";
import { formatDuration, parseDuration } from "../duration";
import { JetfnError } from "../errors";
import { createLogger } from "../logger";
import { describeAuditEntry } from "./audit-format";
import { printJson, printJsonLines } from "./output";
import { resolveDatabaseUrl, type StartedService } from "./services";

/** Options of `jetfn audit`. */
export interface AuditCommandOptions {
  function?: string;
  outside?: boolean;
  table?: string;
  invocation?: string;
  row?: string;
  since?: string;
  until?: string;
  limit?: string;
  json?: boolean;
  check?: boolean;
  olderThan?: string;
}

/**
 * `jetfn audit [invocation-id | verify | prune]`: the audit log, newest first, with filters; one
 * invocation's changes grouped by table; a row's history (`--table t --row 42`); `--check` for
 * tables not covered; `verify` for the hash chain; `prune --older-than 90d`.
 */
export async function auditCommand(target: string | undefined, options: AuditCommandOptions): Promise<void> {
  await withDatabase(async (database) => {
    if (target === "verify") return verify(database, options);
    if (target === "prune") return prune(database, options);
    if (options.check) return check(database, options);
    if (target) return showInvocation(database, target, options);
    if (options.row !== undefined) return showRow(database, options);
    const entries = await listAuditEntries(database.db, filterFrom(options));
    if (options.json) printJsonLines(entries);
    else process.stdout.write(entries.map((entry) => `${describeAuditEntry(entry)}\n`).join(""));
  });
}

async function showInvocation(database: DatabaseClient, id: string, options: AuditCommandOptions): Promise<void> {
  const byTable = await invocationChanges(database.db, id);
  if (options.json) return printJsonLines([...byTable.values()].flat());
  if (byTable.size === 0) {
    process.stdout.write(`invocation ${id} changed nothing (or its changes were rolled back)\n`);
    return;
  }
  for (const [table, entries] of byTable) {
    process.stdout.write(`${table}: ${entries.length} change(s)\n`);
    for (const entry of entries) process.stdout.write(`  ${describeAuditEntry(entry)}\n`);
  }
}

async function showRow(database: DatabaseClient, options: AuditCommandOptions): Promise<void> {
  if (!options.table) throw new JetfnError("E_INPUT_INVALID", "--row needs --table (the table the row belongs to)");
  const row = parseRow(options.row as string);
  const history = await rowHistory(database.db, options.table, row);
  if (options.json) return printJsonLines(history);
  if (history.length === 0) process.stdout.write(`no recorded changes of ${options.table} row ${options.row}\n`);
  for (const entry of history) process.stdout.write(`${describeAuditEntry(entry)}\n`);
}

async function check(database: DatabaseClient, options: AuditCommandOptions): Promise<void> {
  const schemas = resolveConfig().auditSchemas;
  const missing = await uncoveredTables(database.sql, schemas);
  if (options.json) printJson({ schemas, uncovered: missing });
  else if (missing.length === 0) process.stdout.write(`every table of ${schemas.join(", ")} is audited\n`);
  else for (const table of missing) process.stdout.write(`not audited: ${table.schema}.${table.table}\n`);
  if (missing.length > 0) process.exitCode = 1;
}

async function verify(database: DatabaseClient, options: AuditCommandOptions): Promise<void> {
  const [broken, status] = await Promise.all([verifyAuditChain(database.db), auditSealStatus(database.db)]);
  if (options.json) printJson({ ok: broken === undefined, broken: broken ?? null, ...status });
  else if (broken) {
    const counts =
      broken.expectedRows === null ? "" : ` (sealed ${broken.expectedRows} rows, found ${broken.foundRows})`;
    process.stdout.write(`BROKEN at seal #${broken.seq}: ${broken.problem}${counts}\n`);
  } else {
    const lag = status.oldestUnsealed
      ? `; ${status.unsealedRows} row(s) not sealed yet, oldest ${formatDuration(Date.now() - Date.parse(status.oldestUnsealed))} ago`
      : "; every row is sealed";
    process.stdout.write(`chain intact: ${status.seals} seal(s) covering ${status.sealedRows} row(s)${lag}\n`);
  }
  if (broken) process.exitCode = 1;
}

async function prune(database: DatabaseClient, options: AuditCommandOptions): Promise<void> {
  if (!options.olderThan) throw new JetfnError("E_INPUT_INVALID", "prune needs --older-than <duration>, e.g. 90d");
  const keepMs = parseDuration(options.olderThan);
  const rows = await database.sql<{ name: string }[]>`
    select jetfn.prune_audit(${`${Math.floor(keepMs / 1000)} seconds`}::interval) as name`;
  const dropped = rows.map((row) => row.name);
  if (options.json) printJson({ dropped });
  else
    process.stdout.write(
      dropped.length ? `dropped: ${dropped.join(", ")}\n` : "nothing old enough (and fully sealed) to prune\n",
    );
}

function filterFrom(options: AuditCommandOptions): AuditFilter {
  return {
    function: options.function,
    outside: options.outside,
    table: options.table,
    invocationId: options.invocation,
    since: options.since ? parseTime(options.since) : undefined,
    until: options.until ? parseTime(options.until) : undefined,
    limit: options.limit ? parsePositive(options.limit) : 50,
  };
}

/** `1h` means an hour ago; anything else must be a date or time Date can read. */
export function parseTime(value: string): Date {
  if (/^\d+(\.\d+)?\s*(ms|s|m|h|d)$/.test(value.trim())) return new Date(Date.now() - parseDuration(value));
  const time = Date.parse(value);
  if (Number.isNaN(time))
    throw new JetfnError("E_INPUT_INVALID", `"${value}" is neither a duration (like 2h) nor a date`);
  return new Date(time);
}

function parseRow(value: string): unknown {
  if (value.trim().startsWith("{")) {
    try {
      return JSON.parse(value);
    } catch {
      throw new JetfnError("E_INPUT_INVALID", `--row ${value} is not valid JSON`);
    }
  }
  return value;
}

function parsePositive(value: string): number {
  const parsed = Number(value);
  if (!Number.isInteger(parsed) || parsed < 1)
    throw new JetfnError("E_INPUT_INVALID", `--limit must be a positive integer, got ${value}`);
  return parsed;
}

async function withDatabase(run: (database: DatabaseClient) => Promise<void>): Promise<void> {
  const config = resolveConfig();
  const started: StartedService[] = [];
  const url = await resolveDatabaseUrl(
    config,
    createLogger({ level: "warn", destination: process.stderr }),
    started,
    false,
  );
  const database = connectDatabase({ url, poolSize: 2 });
  try {
    await run(database);
  } finally {
    await database.close();
  }
}
