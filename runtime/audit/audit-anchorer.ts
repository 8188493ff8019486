import type { JetStreamClient, JetStreamManager } from "@nats-io/jetstream";
import type { Logger } from "pino";
import type { Sql } from "postgres";
import { lastAnchoredSeq, publishSealAnchor, type SealAnchor } from "../nats/audit-anchor-stream";
import { SELECT_SEALS, type SealRow, sameSeal, toSealAnchor } from "./audit-seal-record";

/** Publishes each committed seal's anchor to NATS, in seq order. */
export interface AuditAnchorer {
  /** Anchors every seal not anchored yet; resolves with how many this call published. */
  anchorPending(): Promise<number>;
}

/** Where to read seals and publish their anchors. */
export interface AuditAnchorerOptions {
  sql: Sql;
  js: JetStreamClient;
  manager: JetStreamManager;
  logger: Logger;
}

/** Seals read per query while catching up. */
const ANCHOR_BATCH = 1_000;

/**
 * Anchors seals after their commit: a seal counts as anchored once the server acknowledged its
 * anchor. Seals are anchored strictly in order and a round stops at the first failure, so the
 * anchored seals always form a prefix of the chain; on start (and after a failure) the anchorer
 * picks up after the last anchored seal, so seals committed while NATS was away, or by a runtime
 * that stopped before publishing, are anchored by the next round of any runtime.
 */
export function createAuditAnchorer(options: AuditAnchorerOptions): AuditAnchorer {
  const { sql, js, manager, logger } = options;
  let anchoredThrough: number | undefined;
  const reported = new Set<number>();

  const anchorPending = async (): Promise<number> => {
    anchoredThrough ??= await lastAnchoredSeq(manager);
    let published = 0;
    for (;;) {
      const seals = await readSealsAfter(sql, anchoredThrough, ANCHOR_BATCH);
      for (const seal of seals) {
        const outcome = await publishSealAnchor(js, manager, seal);
        if (outcome === "anchored") published++;
        else if (!sameSeal(outcome, seal) && !reported.has(seal.seq)) {
          // Another runtime anchoring the same seal sends the same content; a different one
          // means the chain in the database is no longer the chain that was anchored.
          reported.add(seal.seq);
          logger.error(
            { seq: seal.seq, anchoredHash: outcome.hash, databaseHash: seal.hash },
            "An audit seal in the database differs from its anchor: the chain was rewritten; run `jetfn audit verify`.",
          );
        }
        anchoredThrough = seal.seq;
      }
      if (seals.length < ANCHOR_BATCH) return published;
    }
  };
  return { anchorPending };
}

/** The seals after `seq`, in order, as their anchors. */
async function readSealsAfter(sql: Sql, seq: number, limit: number): Promise<SealAnchor[]> {
  const rows = await sql.unsafe<SealRow[]>(`${SELECT_SEALS} where seq > $1 order by seq limit $2`, [seq, limit]);
  return rows.map(toSealAnchor);
}
