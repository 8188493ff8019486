import { sql } from "drizzle-orm";
import type { SealAnchor } from "../nats/audit-anchor-stream";
import { type AnyPgDatabase, type AuditChainBreak, rowsOf } from "./audit-queries";

/** Seals recomputed at once by verifyAudit. @default 2 */
export const DEFAULT_VERIFY_CONCURRENCY = 2;

/**
 * The same check as jetfn.verify_audit() (each seal chains from the one before it and its hash
 * matches its rows), with the seals' hashes recomputed `concurrency` at a time on separate
 * connections: every seal stores the hash it chains from, so seals can be recomputed in any order,
 * and nearly all of verify's time is this hashing. Resolves with the first broken seal.
 */
export async function checkChain(
  db: AnyPgDatabase,
  seals: readonly SealAnchor[],
  concurrency = DEFAULT_VERIFY_CONCURRENCY,
): Promise<AuditChainBreak | undefined> {
  const breaks: AuditChainBreak[] = [];
  let expectedPrevious = await chainStart(db);
  for (const seal of seals) {
    if (seal.previousHash !== expectedPrevious) {
      breaks.push({
        seq: seal.seq,
        problem: "the seal does not chain from the previous one (a seal was altered or removed)",
        expectedRows: seal.rowCount,
        foundRows: null,
      });
      break;
    }
    expectedPrevious = seal.hash;
  }
  const queue = [...seals];
  const worker = async (): Promise<void> => {
    for (let seal = queue.shift(); seal; seal = queue.shift()) {
      if (!ROW_TEXT[seal.format]) {
        // A newer jetfn's seal: not a sign that rows changed.
        breaks.push({
          seq: seal.seq,
          problem: `the seal is of format ${seal.format}, which this version of jetfn does not know`,
          expectedRows: seal.rowCount,
          foundRows: null,
        });
        continue;
      }
      const found = await recompute(db, seal);
      // Rows sealed before formats hashed the step were written before it existed: a step on one was added since.
      if (found.hash !== seal.hash || (seal.format < 3 && found.stepped > 0))
        breaks.push(rowsBreak(seal, found.rowCount));
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, concurrency) }, worker));
  return breaks.sort((a, b) => a.seq - b.seq)[0];
}

/** The hash the first seal chains from: the last prune's anchor, or "genesis". */
async function chainStart(db: AnyPgDatabase): Promise<string> {
  const result = await db.execute(sql`select hash from jetfn.audit_anchors order by seq desc limit 1`);
  return rowsOf<{ hash: string }>(result)[0]?.hash ?? "genesis";
}

/**
 * A row's text in each format, as jetfn.audit_row_text (1), _v2 (2) and _v3 (3) build
 * it, written out here rather than called: verify must not run code that whoever controls the
 * database (its owner included, not only a superuser) can replace with a function that returns
 * the sealed hashes whatever the rows hold. Only built-in functions are used, schema-qualified.
 */
const ROW_TEXT: Record<number, string> = {
  1: `pg_catalog.concat_ws('|', l.id, (extract(epoch from l.logged_at) * 1000000)::bigint, l.txid, l.function,
        l.invocation_id, l.attempt, l.db_user, l.schema_name, l.table_name, l.operation,
        l.pk::text, l.old_row::text, l.new_row::text, l.changed_columns::text)`,
  2: `(row(l.id, (extract(epoch from l.logged_at) * 1000000)::bigint, l.txid, l.function,
        l.invocation_id, l.attempt, l.db_user, l.schema_name, l.table_name, l.operation,
        l.pk::text, l.old_row::text, l.new_row::text, l.changed_columns))::text`,
  3: `(row(l.id, (extract(epoch from l.logged_at) * 1000000)::bigint, l.txid, l.function,
        l.invocation_id, l.attempt, l.db_user, l.schema_name, l.table_name, l.operation,
        l.pk::text, l.old_row::text, l.new_row::text, l.changed_columns, l.step))::text`,
};

async function recompute(
  db: AnyPgDatabase,
  seal: SealAnchor,
): Promise<{ hash: string; rowCount: number; stepped: number }> {
  const text = ROW_TEXT[seal.format] as string;
  const [row] = rowsOf<{ hash: string; row_count: number; stepped: number }>(
    await db.execute(sql`
      select pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to(
               ${seal.previousHash}::text || coalesce(pg_catalog.string_agg(${sql.raw(text)}, E'\n' order by l.txid, l.id), ''),
               'UTF8')), 'hex') as hash,
             pg_catalog.count(*)::integer as row_count,
             pg_catalog.count(*) filter (where l.step is not null)::integer as stepped
      from jetfn.audit_log l
      where l.txid >= ${seal.afterTxid}::bigint and l.txid <= ${seal.lastTxid}::bigint
        and (l.txid, l.id) > (${seal.afterTxid}::bigint, ${seal.afterId}::bigint)
        and (l.txid, l.id) <= (${seal.lastTxid}::bigint, ${seal.lastId}::bigint)`),
  );
  return { hash: row?.hash ?? "", rowCount: row?.row_count ?? 0, stepped: row?.stepped ?? 0 };
}

function rowsBreak(seal: SealAnchor, foundRows: number): AuditChainBreak {
  const problem =
    foundRows < seal.rowCount
      ? "audit rows were deleted"
      : foundRows > seal.rowCount
        ? "audit rows were added"
        : "audit rows were altered";
  return { seq: seal.seq, problem, expectedRows: seal.rowCount, foundRows };
}
