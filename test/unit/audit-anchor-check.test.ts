import { describe, expect, it } from "vitest";
import { compareWithAnchors } from "../../runtime/audit/audit-anchor-check";
import type { AuditAnchors, SealAnchor } from "../../runtime/nats/audit-anchor-stream";

/** Seal `seq` of a chain of seals of 10 rows each. */
function seal(seq: number, changes: Partial<SealAnchor> = {}): SealAnchor {
  return {
    seq,
    hash: `h${seq}`,
    previousHash: seq === 1 ? "genesis" : `h${seq - 1}`,
    afterTxid: seq * 10 - 10,
    afterId: seq * 10 - 10,
    lastTxid: seq * 10,
    lastId: seq * 10,
    rowCount: 10,
    format: 2,
    ...changes,
  };
}

const anchorsOf = (seals: SealAnchor[], prunedThrough = 0): AuditAnchors => ({
  exists: true,
  seals,
  prunes: prunedThrough ? [{ throughSeq: prunedThrough, hash: `h${prunedThrough}`, reason: "pruned" }] : [],
});

describe("comparing seals with their anchors", () => {
  it("accepts anchored seals, and counts the newest ones not anchored yet", () => {
    const result = compareWithAnchors([seal(1), seal(2), seal(3)], anchorsOf([seal(1), seal(2)]));
    expect(result).toEqual({ problems: [], anchored: 2, unanchored: 1, anchoredThrough: 2, prunedThrough: 0 });
  });

  it("names a seal that differs from its anchor, and what differs", () => {
    const { problems } = compareWithAnchors(
      [seal(1), seal(2, { hash: "x", rowCount: 9 })],
      anchorsOf([seal(1), seal(2)]),
    );
    expect(problems).toEqual([
      {
        seq: 2,
        problem: "the seal differs from its anchor (hash, row count: the chain was rewritten or resealed)",
        expectedRows: 10,
        foundRows: 9,
      },
    ]);
  });

  it("tells a deleted seal from a cut tail", () => {
    const { problems } = compareWithAnchors(
      [seal(2), seal(3)],
      anchorsOf([seal(1), seal(2), seal(3), seal(4), seal(5)]),
    );
    expect(problems.map((problem) => [problem.seq, problem.problem])).toEqual([
      [1, "the seal was deleted (its anchor exists)"],
      [4, "the chain was cut: anchors reach seal #5, the database's last seal is #3 (2 seal(s) of 20 row(s) are gone)"],
    ]);
  });

  it("accepts seals missing up to a prune recorded with the anchors, and only up to it", () => {
    expect(compareWithAnchors([seal(3)], anchorsOf([seal(1), seal(2), seal(3)], 2)).problems).toEqual([]);
    expect(compareWithAnchors([seal(3)], anchorsOf([seal(1), seal(2), seal(3)], 1)).problems).toEqual([
      expect.objectContaining({ seq: 2, problem: "the seal was deleted (its anchor exists)" }),
    ]);
  });

  it("reports a seal with no anchor among anchored ones, and a missing anchor stream", () => {
    const gap = compareWithAnchors([seal(1), seal(2), seal(3)], anchorsOf([seal(1), seal(3)]));
    expect(gap.problems).toEqual([expect.objectContaining({ seq: 2, problem: expect.stringContaining("no anchor") })]);
    const missing = compareWithAnchors([seal(1)], { exists: false, seals: [], prunes: [] });
    expect(missing.problems).toEqual([expect.objectContaining({ problem: expect.stringContaining("does not exist") })]);
  });
});
