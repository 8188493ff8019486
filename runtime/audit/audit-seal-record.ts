import type { SealAnchor } from "../nats/audit-anchor-stream";

/**
 * Selects seals as SealRow from jetfn.audit_seals (bigints as float8, exact below 2^53, so both
 * postgres.js and drizzle return numbers). Add the where, order and limit.
 */
export const SELECT_SEALS = `
  select seq::float8 as seq, hash, previous_hash, after_txid::float8 as after_txid, after_id::float8 as after_id,
         last_txid::float8 as last_txid, last_id::float8 as last_id, row_count, format
  from jetfn.audit_seals`;

/** A row of jetfn.audit_seals as SELECT_SEALS reads it. */
export interface SealRow {
  seq: number;
  hash: string;
  previous_hash: string;
  after_txid: number;
  after_id: number;
  last_txid: number;
  last_id: number;
  row_count: number;
  format: number;
}

/** A seal row as its anchor. */
export function toSealAnchor(row: SealRow): SealAnchor {
  return {
    seq: row.seq,
    hash: row.hash,
    previousHash: row.previous_hash,
    afterTxid: row.after_txid,
    afterId: row.after_id,
    lastTxid: row.last_txid,
    lastId: row.last_id,
    rowCount: row.row_count,
    format: row.format,
  };
}

/** Two records of one seal agree on everything an anchor fixes. */
export function sameSeal(a: SealAnchor, b: SealAnchor): boolean {
  return (
    a.seq === b.seq &&
    a.hash === b.hash &&
    a.previousHash === b.previousHash &&
    a.afterTxid === b.afterTxid &&
    a.afterId === b.afterId &&
    a.lastTxid === b.lastTxid &&
    a.lastId === b.lastId &&
    a.rowCount === b.rowCount &&
    a.format === b.format
  );
}
