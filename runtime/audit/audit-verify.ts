import type { NatsConnection } from "@nats-io/transport-node";
import { sql } from "drizzle-orm";
import { readAuditAnchors } from "../nats/audit-anchor-stream";
import { type AnchorComparison, compareWithAnchors } from "./audit-anchor-check";
import { checkChain } from "./audit-chain-check";
import {
  type AnyPgDatabase,
  type AuditChainBreak,
  type AuditSealStatus,
  auditSealStatus,
  rowsOf,
} from "./audit-queries";
import { SELECT_SEALS, type SealRow, toSealAnchor } from "./audit-seal-record";

/** The outcome of `jetfn audit verify`: the chain against itself and against its anchors. */
export interface AuditVerification extends AuditSealStatus {
  ok: boolean;
  /** The first problem (lowest seal), or null when the chain is intact. */
  broken: AuditChainBreak | null;
  /** Every problem found: the chain's first broken link, and each disagreement with the anchors. */
  problems: AuditChainBreak[];
  anchors: Omit<AnchorComparison, "problems">;
}

/** Options of verifyAudit. */
export interface VerifyAuditOptions {
  /** Seals recomputed at once, each on a connection of `db`'s pool. @default 2 */
  concurrency?: number;
}

/**
 * Recomputes the chain in the database (an edited, deleted or added row in a sealed range, a
 * removed or altered seal) and compares its seals with their anchors in NATS, which the database
 * cannot reach (a deleted seal, a cut tail, a rewritten or resealed chain).
 * @example const result = await verifyAudit(db, nc); if (!result.ok) console.log(result.broken);
 */
export async function verifyAudit(
  db: AnyPgDatabase,
  nc: NatsConnection,
  options: VerifyAuditOptions = {},
): Promise<AuditVerification> {
  const [status, seals, anchors] = await Promise.all([
    auditSealStatus(db),
    db.execute(sql.raw(`${SELECT_SEALS} order by seq`)).then((result) => rowsOf<SealRow>(result).map(toSealAnchor)),
    readAuditAnchors(nc),
  ]);
  const chainBreak = await checkChain(db, seals, options.concurrency);
  const { problems: anchorProblems, ...comparison } = compareWithAnchors(seals, anchors);
  const problems = [...(chainBreak ? [chainBreak] : []), ...anchorProblems].sort((a, b) => a.seq - b.seq);
  return { ok: problems.length === 0, broken: problems[0] ?? null, problems, anchors: comparison, ...status };
}
