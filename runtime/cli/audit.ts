import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import {
  type AuditFilter,
  invocationEntries,
  invocationSteps,
  listAuditEntries,
  rowHistory,
} from "../audit/audit-queries";
import { type AuditVerification, verifyAudit } from "../audit/audit-verify";
import { resolveConfig } from "../config";
import { uncoveredTables } from "../db/audit-coverage";
import { connectDatabase, type DatabaseClient } from "../db/client";
import { DEFAULT_RUNTIME_ROLE, type UnattributedWrites, unattributedWrites } from "../db/unattributed-writes";
import { describeAuditEntry, describeInvocationChanges } from "../inspect/audit-format";
import { parseTime } from "../inspect/time-input";
import { ensureAuditAnchorStream, publishPruneAnchor } from "../nats/audit-anchor-stream";
import { connectNats } from "../nats/connection";
import { formatDuration, parseDuration } from "../support/duration";
import { JetfnError } from "../support/errors";
import { createLogger } from "../support/logger";
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
  /** With --check: the role the runtime connects as. @default "jetfn_runtime" */
  runtimeRole?: string;
  olderThan?: string;
  /** With an invocation id: only this durable step's changes. */
  step?: string;
}

/**
 * `jetfn audit [invocation-id | verify | prune]`: the audit log, newest first, with filters; one
 * invocation's changes grouped by durable step and table; a row's history (`--table t --row 42`); `--check` for
 * tables not covered and writes by the runtime's role outside any invocation; `verify` for the hash chain; `prune --older-than 90d`.
 */
export async function auditCommand(target: string | undefined, options: AuditCommandOptions): Promise<void> {
  const special = target === "verify" || target === "prune" || options.check;
  if (options.step !== undefined && (!target || special)) {
    throw new JetfnError(
      "E_INPUT_INVALID",
      "--step needs the invocation id as the argument: jetfn audit <invocation-id> --step <key>",
    );
  }
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
  const all = await invocationEntries(database.db, id);
  const entries = options.step === undefined ? all : all.filter((entry) => entry.step === options.step);
  if (options.json) return printJsonLines(entries);
  if (entries.length === 0) {
    const what = options.step === undefined ? `invocation ${id}` : `step ${JSON.stringify(options.step)} of ${id}`;
    process.stdout.write(`${what} changed nothing (or its changes were rolled back)\n`);
    return;
  }
  const steps = entries.some((entry) => entry.step != null) ? await invocationSteps(database.db, id) : [];
  process.stdout.write(describeInvocationChanges(entries, steps));
}

async function showRow(database: DatabaseClient, options: AuditCommandOptions): Promise<void> {
  if (!options.table) throw new JetfnError("E_INPUT_INVALID", "--row needs --table (the table the row belongs to)");
  const row = parseRow(options.row as string);
  const history = await rowHistory(database.db, options.table, row);
  if (options.json) return printJsonLines(history);
  if (history.length === 0) process.stdout.write(`no recorded changes of ${options.table} row ${options.row}\n`);
  for (const entry of history) process.stdout.write(`${describeAuditEntry(entry)}\n`);
}

/** Tables not covered, and writes by the runtime's role outside any invocation (exit 1 if either). */
async function check(database: DatabaseClient, options: AuditCommandOptions): Promise<void> {
  const schemas = resolveConfig().auditSchemas;
  const since = options.since ? parseTime(options.since) : undefined;
  const [missing, outside] = await Promise.all([
    uncoveredTables(database.sql, schemas),
    unattributedWrites(database.sql, options.runtimeRole ?? DEFAULT_RUNTIME_ROLE, since),
  ]);
  if (options.json) printJson({ schemas, uncovered: missing, runtimeWritesOutsideInvocations: outside });
  else {
    if (missing.length === 0) process.stdout.write(`every table of ${schemas.join(", ")} is audited\n`);
    else for (const table of missing) process.stdout.write(`not audited: ${table.schema}.${table.table}\n`);
    process.stdout.write(`${describeUnattributed(outside)}\n`);
  }
  if (missing.length > 0 || outside.rows > 0) process.exitCode = 1;
}

function describeUnattributed(outside: UnattributedWrites): string {
  if (outside.rows === 0) return `no writes by ${outside.role} outside an invocation`;
  return (
    `${outside.rows} change(s) by ${outside.role} outside any invocation, in ${outside.tables.join(", ")}, ` +
    `from ${outside.first} to ${outside.last}: the runtime writes only inside invocations, so someone used its credentials`
  );
}

async function verify(database: DatabaseClient, options: AuditCommandOptions): Promise<void> {
  const result = await withNats((nc) => verifyAudit(database.db, nc));
  if (options.json) printJson(result);
  else process.stdout.write(describeVerification(result));
  if (!result.ok) process.exitCode = 1;
}

/** The verify result as a person reads it: the first problem, or what is intact and how far. */
export function describeVerification(result: AuditVerification): string {
  const { broken, anchors } = result;
  if (broken) {
    const counts =
      broken.expectedRows === null ? "" : ` (sealed ${broken.expectedRows} rows, found ${broken.foundRows ?? "none"})`;
    const more = result.problems.length > 1 ? `; ${result.problems.length - 1} more problem(s), see --json` : "";
    return `BROKEN at seal #${broken.seq}: ${broken.problem}${counts}${more}\n`;
  }
  const anchored =
    anchors.unanchored === 0
      ? `, anchored through seal #${anchors.anchoredThrough}`
      : `; ${anchors.unanchored} newest seal(s) not anchored yet`;
  const lag = result.oldestUnsealed
    ? `; ${result.unsealedRows} row(s) not sealed yet, oldest ${formatDuration(Date.now() - Date.parse(result.oldestUnsealed))} ago`
    : "; every row is sealed";
  return `chain intact: ${result.seals} seal(s) covering ${result.sealedRows} row(s)${anchored}${lag}\n`;
}

/**
 * Prunes inside one transaction that also records the prune in NATS before it commits: seals
 * missing from the database are only accepted by verify up to a prune recorded there.
 */
async function prune(database: DatabaseClient, options: AuditCommandOptions): Promise<void> {
  if (!options.olderThan) throw new JetfnError("E_INPUT_INVALID", "prune needs --older-than <duration>, e.g. 90d");
  const keepMs = parseDuration(options.olderThan);
  const dropped = await withNats(async (nc) => {
    const js = jetstream(nc);
    await ensureAuditAnchorStream(await jetstreamManager(nc), resolveConfig().replication);
    return database.sql.begin(async (tx) => {
      const rows = await tx<{ name: string }[]>`
        select jetfn.prune_audit(${`${Math.floor(keepMs / 1000)} seconds`}::interval) as name`;
      const names = rows.map((row) => row.name);
      const [anchor] = await tx<{ seq: number; hash: string; reason: string }[]>`
        select seq::float8 as seq, hash, reason from jetfn.audit_anchors order by seq desc limit 1`;
      if (names.length > 0 && anchor) {
        await publishPruneAnchor(js, { throughSeq: anchor.seq, hash: anchor.hash, reason: anchor.reason });
      }
      return names;
    });
  });
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

/** Runs `run` on a NATS connection (as configured: NATS_URL and the NATS credentials). */
async function withNats<T>(run: (nc: NatsConnection) => Promise<T>): Promise<T> {
  const config = resolveConfig();
  const nc = await connectNats({
    url: config.natsUrl,
    auth: config.natsAuth,
    name: "jetfn audit",
  });
  try {
    return await run(nc);
  } finally {
    await nc.close();
  }
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
  // verify recomputes seals two at a time, beside its other queries.
  const database = connectDatabase({ url, poolSize: 3 });
  try {
    await run(database);
  } finally {
    await database.close();
  }
}
