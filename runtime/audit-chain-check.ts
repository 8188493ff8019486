import { sql } from "drizzle-orm";
import { type AnyPgDatabase, type AuditChainBreak, rowsOf } from "./audit-queries";
import type { SealAnchor } from "./nats/audit-anchor-stream";

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
      const found = await recompute(db, seal);
      if (found.hash !== seal.hash) breaks.push(rowsBreak(seal, found.rowCount));
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

async function recompute(db: AnyPgDatabase, seal: SealAnchor): Promise<{ hash: string; rowCount: number }> {
  const range = sql`${seal.previousHash}::text, ${seal.afterTxid}::bigint, ${seal.afterId}::bigint, ${seal.lastTxid}::bigint, ${seal.lastId}::bigint`;
  const query =
    seal.format === 1
      ? sql`select hash, row_count from jetfn.audit_range_hash(${range})`
      : sql`select hash, row_count from jetfn.audit_range_hash_v2(${range})`;
  const [row] = rowsOf<{ hash: string; row_count: number }>(await db.execute(query));
  return { hash: row?.hash ?? "", rowCount: row?.row_count ?? 0 };
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
