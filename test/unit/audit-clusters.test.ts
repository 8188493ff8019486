import { describe, expect, it } from "vitest";
import { idClusters } from "../../runtime/audit/audit-queries";

describe("idClusters", () => {
  it("keeps near entries together in id order, and gives far ones clusters of their own", () => {
    const entries = [
      { id: 900_010, txid: 77 },
      { id: 5, txid: 10 },
      { id: 900_000, txid: 76 },
      { id: 1, txid: 10 },
      { id: 4_000, txid: 12 },
    ];
    expect(idClusters(entries, 5_000)).toEqual([
      [
        { id: 1, txid: 10 },
        { id: 5, txid: 10 },
        { id: 4_000, txid: 12 },
      ],
      [
        { id: 900_000, txid: 76 },
        { id: 900_010, txid: 77 },
      ],
    ]);
    expect(idClusters([], 5_000)).toEqual([]);
    expect(idClusters(entries, 0)).toHaveLength(5);
  });
});
