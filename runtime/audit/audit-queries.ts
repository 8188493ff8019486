import { and, asc, desc, eq, gte, isNull, lte, or, type SQL, sql } from "drizzle-orm";
import type { PgDatabase, PgQueryResultHKT } from "drizzle-orm/pg-core";
import { auditLog, auditLookup, auditSeals, auditTail } from "../../schema/jetfn";

/** Any drizzle Postgres database (postgres.js, node-postgres, PGlite...). */
// biome-ignore lint/suspicious/noExplicitAny: drizzle's schema parameters vary per application.
export type AnyPgDatabase = PgDatabase<PgQueryResultHKT, any, any>;

/** One change recorded by the audit triggers. */
export interface AuditEntry {
  id: number;
  at: string;
  txid: number;
  /** The function whose invocation made the change; null for writes outside any function. */
  function: string | null;
  invocationId: string | null;
  attempt: number | null;
  /** The key of the durable step that made the change (`ctx.step`); null outside steps. */
  step: string | null;
  dbUser: string;
  schema: string;
  table: string;
  operation: "INSERT" | "UPDATE" | "DELETE" | "TRUNCATE";
  pk: Record<string, unknown> | null;
  /** DELETE: the row; UPDATE: the changed columns' old values. */
  oldRow: Record<string, unknown> | null;
  /** INSERT: the row; UPDATE: the changed columns' new values. */
  newRow: Record<string, unknown> | null;
  changedColumns: string[] | null;
}

/** What to select; every filter is optional. */
export interface AuditFilter {
  function?: string;
  /** Only writes made outside any function. */
  outside?: boolean;
  /** `table` or `schema.table`. */
  table?: string;
  invocationId?: string;
  /** Primary key of one row: its value (single-column keys) or an object of key columns. */
  row?: unknown;
  since?: Date;
  until?: Date;
  /** @default 100 */
  limit?: number;
}

export const DEFAULT_AUDIT_LIMIT = 100;

/**
 * Changes matching `filter`, newest first.
 * @example await listAuditEntries(db, { function: "send-mail", since: new Date(Date.now() - 3_600_000) })
 */
export async function listAuditEntries(db: AnyPgDatabase, filter: AuditFilter = {}): Promise<AuditEntry[]> {
  return selectEntries(db, filter, "desc", filter.limit ?? DEFAULT_AUDIT_LIMIT);
}

/**
 * The history of one row, oldest first: who (which function and invocation, or outside) changed
 * what and when.
 * @example await rowHistory(db, "items", 42)
 */
export async function rowHistory(db: AnyPgDatabase, table: string, row: unknown, limit = 1_000): Promise<AuditEntry[]> {
  return selectEntries(db, { table, row }, "asc", limit);
}

/** Everything one invocation changed, oldest first. */
export function invocationEntries(db: AnyPgDatabase, invocationId: string): Promise<AuditEntry[]> {
  return selectEntries(db, { invocationId }, "asc");
}

/** Everything one invocation changed, grouped by `schema.table`, in order. */
export async function invocationChanges(db: AnyPgDatabase, invocationId: string): Promise<Map<string, AuditEntry[]>> {
  return groupByTable(await invocationEntries(db, invocationId));
}

/** Changes grouped by `schema.table`, each group in the order given, the groups in order of first change. */
export function groupByTable(entries: AuditEntry[]): Map<string, AuditEntry[]> {
  const byTable = new Map<string, AuditEntry[]>();
  for (const entry of entries) {
    const key = `${entry.schema}.${entry.table}`;
    byTable.set(key, [...(byTable.get(key) ?? []), entry]);
  }
  return byTable;
}

/** A durable step of an invocation, as `jetfn audit <invocation-id>` heads its changes with. */
export interface InvocationStep {
  key: string;
  seq: number;
  /** The attempt of the step that committed (or the attempts it has had). */
  attempt: number;
  /** When it finished (ISO 8601; `finished_at`, taken inside its transaction); null while it has not. */
  finishedAt: string | null;
  /** The transaction that recorded it (`txid_current()`); null for a step that has not committed. */
  txid: string | null;
}

/** The steps of an invocation, in the order they ran (`seq`). */
export async function invocationSteps(db: AnyPgDatabase, invocationId: string): Promise<InvocationStep[]> {
  const result = (await db.execute(sql`
    select key, seq, attempts, finished_at, txid::text as txid from jetfn.steps
    where invocation_id = ${invocationId} order by seq`)) as unknown;
  return rowsOf<{ key: string; seq: number; attempts: number; finished_at: string | Date | null; txid: string | null }>(
    result,
  ).map((row) => ({
    key: row.key,
    seq: Number(row.seq),
    attempt: Number(row.attempts),
    finishedAt: row.finished_at === null ? null : new Date(row.finished_at).toISOString(),
    txid: row.txid,
  }));
}

/** State of the hash chain: seals, sealed rows, and how far sealing lags. */
export interface AuditSealStatus {
  seals: number;
  sealedRows: number;
  unsealedRows: number;
  oldestUnsealed: string | null;
}

/** How much of the log is sealed. */
export async function auditSealStatus(db: AnyPgDatabase): Promise<AuditSealStatus> {
  const [totals] = await db
    .select({ seals: sql<number>`count(*)::int`, rows: sql<number>`coalesce(sum(${auditSeals.rowCount}), 0)::int` })
    .from(auditSeals);
  const lag = (await db.execute(
    sql`select unsealed_rows::int as unsealed, oldest_unsealed::text as oldest from jetfn.audit_seal_lag()`,
  )) as unknown;
  const [row] = rowsOf<{ unsealed: number; oldest: string | null }>(lag);
  return {
    seals: totals?.seals ?? 0,
    sealedRows: totals?.rows ?? 0,
    unsealedRows: row?.unsealed ?? 0,
    oldestUnsealed: row?.oldest ?? null,
  };
}

/** The first broken link of the chain, if any. */
export interface AuditChainBreak {
  seq: number;
  problem: string;
  expectedRows: number | null;
  foundRows: number | null;
}

/** Recomputes every seal; resolves with the first broken link, or undefined when intact. */
export async function verifyAuditChain(db: AnyPgDatabase): Promise<AuditChainBreak | undefined> {
  const result = (await db.execute(
    sql`select seq::int as seq, problem, expected_rows, found_rows from jetfn.verify_audit()`,
  )) as unknown;
  const [row] = rowsOf<{ seq: number; problem: string; expected_rows: number | null; found_rows: number | null }>(
    result,
  );
  if (!row) return undefined;
  return { seq: row.seq, problem: row.problem, expectedRows: row.expected_rows, foundRows: row.found_rows };
}

/**
 * Audit rows matching `filter` in id order. Sealed rows are found in jetfn.audit_lookup, which the
 * sealer fills (b-trees on id, function, invocation; a hash on the row key); the unsealed tail
 * (seconds of writes while a runtime seals) is read through jetfn.audit_tail. The tail is read
 * first: sealing only moves rows from the tail into the lookup, so a row sealed between the two
 * reads is seen twice (and kept once), never missed.
 */
async function selectEntries(
  db: AnyPgDatabase,
  filter: AuditFilter,
  direction: "asc" | "desc",
  limit?: number,
): Promise<AuditEntry[]> {
  const keys = filter.row === undefined ? undefined : await primaryKeyCandidates(db, filter);
  const order = direction === "asc" ? asc : desc;
  const bounded = <T extends { limit(count: number): T }>(query: T): T =>
    limit === undefined ? query : query.limit(limit);
  const tail = await bounded(
    db
      .select()
      .from(auditTail)
      .where(and(...conditions(filter, auditTail, keys)))
      .orderBy(order(auditTail.id))
      .$dynamic(),
  );
  const found = await bounded(
    db
      .select({ id: auditLookup.id, txid: auditLookup.txid })
      .from(auditLookup)
      .where(and(...conditions(filter, auditLookup, keys)))
      .orderBy(order(auditLookup.id))
      .$dynamic(),
  );
  const sealed = await fetchSealed(db, conditions(filter, auditLog, keys), found);
  const byId = new Map([...sealed, ...tail].map((row) => [row.id, row]));
  const sign = direction === "asc" ? 1 : -1;
  const rows = [...byId.values()].sort((a, b) => sign * (a.id - b.id));
  return (limit === undefined ? rows : rows.slice(0, limit)).map(toEntry);
}

/**
 * The log rows of lookup entries. The log has no b-tree; its BRIN index over (txid, id) narrows
 * the scan to the block ranges of each cluster of entries (entries far apart, such as a row's
 * insert and its update months later, make clusters of their own rather than one box spanning the
 * log), then each row is matched exactly.
 */
async function fetchSealed(
  db: AnyPgDatabase,
  where: SQL[],
  found: { id: number; txid: number | null }[],
): Promise<(typeof auditLog.$inferSelect)[]> {
  const located = found.filter((entry): entry is LocatedEntry => entry.txid !== null);
  if (located.length === 0) return [];
  const boxes = idClusters(located).map((cluster) => {
    const txids = cluster.map((entry) => entry.txid);
    return sql`(${auditLog.txid} between ${Math.min(...txids)} and ${Math.max(...txids)} and ${auditLog.id} between ${cluster[0]?.id} and ${cluster.at(-1)?.id})`;
  });
  const txids = located.map((entry) => entry.txid);
  const ids = located.map((entry) => entry.id);
  return db
    .select()
    .from(auditLog)
    .where(
      and(
        ...where,
        or(...boxes),
        sql`(${auditLog.txid}, ${auditLog.id}) in (select * from unnest(${`{${txids.join(",")}}`}::bigint[], ${`{${ids.join(",")}}`}::bigint[]))`,
      ),
    );
}

/** A sealed row's place in the log. */
export interface LocatedEntry {
  id: number;
  txid: number;
}

/**
 * About the rows of one BRIN block range (128 pages of audit rows): ids closer than this are
 * fetched with one condition, farther ones with a condition of their own.
 */
export const CLUSTER_ID_GAP = 5_000;

/** Entries in id order, split wherever ids lie more than `gap` apart. */
export function idClusters(entries: readonly LocatedEntry[], gap = CLUSTER_ID_GAP): LocatedEntry[][] {
  const clusters: LocatedEntry[][] = [];
  for (const entry of [...entries].sort((a, b) => a.id - b.id)) {
    const current = clusters.at(-1);
    const last = current?.at(-1);
    if (current && last && entry.id - last.id <= gap) current.push(entry);
    else clusters.push([entry]);
  }
  return clusters;
}

function conditions(
  filter: AuditFilter,
  table: typeof auditLog | typeof auditTail | typeof auditLookup,
  keys: Record<string, unknown>[] | undefined,
): SQL[] {
  const where: SQL[] = [];
  if (filter.function) where.push(eq(table.function, filter.function));
  if (filter.outside) where.push(isNull(table.function));
  if (filter.invocationId) where.push(eq(table.invocationId, filter.invocationId));
  if (filter.since) where.push(gte(table.loggedAt, filter.since.toISOString()));
  if (filter.until) where.push(lte(table.loggedAt, filter.until.toISOString()));
  if (filter.table) {
    const [schema, name] = filter.table.includes(".") ? filter.table.split(".", 2) : [undefined, filter.table];
    where.push(eq(table.tableName, name as string));
    if (schema) where.push(eq(table.schemaName, schema));
  }
  // The log stores keys as json, which has no equality; the lookup's are jsonb already.
  if (keys) {
    const candidates = keys.map((key) => sql`${JSON.stringify(key)}::jsonb`);
    where.push(sql`${table.pk}::jsonb in (${sql.join(candidates, sql`, `)})`);
  }
  return where;
}

/**
 * The primary keys a row filter may mean: `42` matches `{"id": 42}` and `{"id": "42"}` for a
 * table keyed by `id`; an object is taken as the key itself.
 */
async function primaryKeyCandidates(db: AnyPgDatabase, filter: AuditFilter): Promise<Record<string, unknown>[]> {
  const { table, row } = filter;
  if (!table) throw new TypeError("a row filter needs the table it belongs to");
  if (typeof row === "object" && row !== null) return [row as Record<string, unknown>];
  const qualified = table.includes(".") ? table : `public.${table}`;
  const result = (await db.execute(
    sql`select jetfn.primary_key_columns(to_regclass(${qualified})) as columns`,
  )) as unknown;
  const columns = rowsOf<{ columns: string[] | null }>(result)[0]?.columns ?? [];
  const key = columns.length === 1 ? (columns[0] as string) : "id";
  const text = String(row);
  const values = new Set<unknown>([text]);
  if (/^-?\d+(\.\d+)?$/.test(text)) values.add(Number(text));
  return [...values].map((value) => ({ [key]: value }));
}

function toEntry(row: typeof auditLog.$inferSelect): AuditEntry {
  return {
    id: row.id,
    at: row.loggedAt,
    txid: row.txid,
    function: row.function,
    invocationId: row.invocationId,
    attempt: row.attempt,
    step: row.step,
    dbUser: row.dbUser,
    schema: row.schemaName,
    table: row.tableName,
    operation: row.operation,
    pk: row.pk as Record<string, unknown> | null,
    oldRow: row.oldRow as Record<string, unknown> | null,
    newRow: row.newRow as Record<string, unknown> | null,
    changedColumns: row.changedColumns,
  };
}

/** drizzle's execute() returns the rows (postgres.js) or `{ rows }` (node-postgres, PGlite). */
export function rowsOf<T>(result: unknown): T[] {
  if (Array.isArray(result)) return result as T[];
  return ((result as { rows?: T[] }).rows ?? []) as T[];
}
