import type { AuditAnchors, SealAnchor } from "../nats/audit-anchor-stream";
import { sameSeal } from "./audit-seal-record";

/** One disagreement between the seals in the database and their anchors. */
export interface AnchorProblem {
  seq: number;
  problem: string;
  /** Rows the anchor says the seal covers. */
  expectedRows: number | null;
  /** Rows the seal in the database says it covers (null when the seal is gone). */
  foundRows: number | null;
}

/** How the database's seals compare with their anchors. */
export interface AnchorComparison {
  problems: AnchorProblem[];
  /** Seals in the database that have their anchor. */
  anchored: number;
  /** The newest seals, not anchored yet: their rows are checked against the database only. */
  unanchored: number;
  /** The last seal anchored, 0 if none. */
  anchoredThrough: number;
  /** Seals up to this seq were pruned (recorded in NATS), so they may be gone. */
  prunedThrough: number;
}

/**
 * Compares the seals in the database with the anchors in NATS. Detects a seal deleted (its anchor
 * is there, the seal is not), a cut tail (anchors beyond the last seal), a rewritten or resealed
 * chain (a seal that differs from its anchor), and a seal missing from the middle of the anchors.
 * Seals newer than the last anchor are only counted: the sealer anchors them after their commit.
 */
export function compareWithAnchors(seals: readonly SealAnchor[], anchors: AuditAnchors): AnchorComparison {
  const prunedThrough = Math.max(0, ...anchors.prunes.map((prune) => prune.throughSeq));
  const bySeq = new Map(seals.map((seal) => [seal.seq, seal]));
  const anchoredThrough = Math.max(0, ...anchors.seals.map((anchor) => anchor.seq));
  const lastSeal = Math.max(0, ...seals.map((seal) => seal.seq));
  const problems: AnchorProblem[] = [];
  if (!anchors.exists && seals.length > 0) {
    problems.push({
      seq: seals[0]?.seq ?? 0,
      problem: "the anchor stream JETFN_AUDIT_ANCHORS does not exist (deleted, or no runtime ever anchored this chain)",
      expectedRows: null,
      foundRows: null,
    });
  }
  const missing = anchors.seals.filter((anchor) => anchor.seq > prunedThrough && !bySeq.has(anchor.seq));
  const cut = missing.filter((anchor) => anchor.seq > lastSeal);
  for (const anchor of missing.filter((anchor) => anchor.seq <= lastSeal)) {
    problems.push(problemOf(anchor, undefined, "the seal was deleted (its anchor exists)"));
  }
  const firstCut = cut[0];
  if (firstCut) {
    const rows = cut.reduce((sum, anchor) => sum + anchor.rowCount, 0);
    problems.push({
      seq: firstCut.seq,
      problem: `the chain was cut: anchors reach seal #${anchoredThrough}, the database's last seal is #${lastSeal} (${cut.length} seal(s) of ${rows} row(s) are gone)`,
      expectedRows: rows,
      foundRows: null,
    });
  }
  let anchored = 0;
  let unanchored = 0;
  const anchorBySeq = new Map(anchors.seals.map((anchor) => [anchor.seq, anchor]));
  for (const seal of seals) {
    const anchor = anchorBySeq.get(seal.seq);
    if (anchor) {
      anchored++;
      if (!sameSeal(anchor, seal)) {
        problems.push(problemOf(anchor, seal, `the seal differs from its anchor (${differences(anchor, seal)})`));
      }
    } else if (seal.seq > anchoredThrough) unanchored++;
    else if (seal.seq > prunedThrough) {
      problems.push(problemOf(undefined, seal, "the seal has no anchor, although later seals have theirs"));
    }
  }
  problems.sort((a, b) => a.seq - b.seq);
  return { problems, anchored, unanchored, anchoredThrough, prunedThrough };
}

function problemOf(anchor: SealAnchor | undefined, seal: SealAnchor | undefined, problem: string): AnchorProblem {
  return {
    seq: anchor?.seq ?? seal?.seq ?? 0,
    problem,
    expectedRows: anchor?.rowCount ?? null,
    foundRows: seal?.rowCount ?? null,
  };
}

/** Which fields of a seal differ from its anchor, for the message: `hash, row count`. */
function differences(anchor: SealAnchor, seal: SealAnchor): string {
  const fields: [keyof SealAnchor, string][] = [
    ["hash", "hash"],
    ["previousHash", "previous hash"],
    ["afterTxid", "range"],
    ["afterId", "range"],
    ["lastTxid", "range"],
    ["lastId", "range"],
    ["rowCount", "row count"],
    ["format", "format"],
  ];
  const differing = new Set(fields.filter(([key]) => anchor[key] !== seal[key]).map(([, name]) => name));
  return `${[...differing].join(", ")}: the chain was rewritten or resealed`;
}
