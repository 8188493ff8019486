import { describe, expect, it } from "vitest";
import { runBench, SCENARIOS } from "../../bench/harness";
import { measureReplicaCost, replicaCostTable } from "../../bench/nats-durability";

// The benchmark harness must not rot: its smoke version runs every scenario with tiny counts.
// Nothing here looks at speed; only that each scenario ran and its outcome checks passed.
describe("npm run bench:smoke", () => {
  it("runs every scenario, prints a table and passes the row-count checks", { timeout: 300_000 }, async () => {
    const lines: string[] = [];
    const result = await runBench({ smoke: true, out: null, log: (line) => lines.push(line) });

    expect(result.errors, lines.join("\n")).toEqual([]);
    for (const scenario of SCENARIOS) expect(result.table).toContain(scenario.title);
    expect(result.markdown).toContain("## Machine, versions, settings");
    const failed = result.checks.filter((check) => !check.ok);
    expect(failed).toEqual([]);
    const labels = new Set(result.checks.map((check) => `${check.contender}: ${check.label}`));
    for (const expected of [
      "jetfn: rows = jobs",
      "jetfn: no duplicates",
      "jetfn: audit rows = rows",
      "jetfn: invocations recorded succeeded",
      "graphile-worker: rows = jobs",
      "pg-boss: rows = jobs",
      "graphile-worker + guarantees: audit rows = rows",
      "pg-boss + guarantees: effects rows = jobs",
      "naive JetStream: all acked",
    ]) {
      expect(labels).toContain(expected);
    }
  });

  it("measures 3 replicas against 1 on a loopback cluster (bench/nats-durability.ts)", {
    timeout: 120_000,
  }, async () => {
    const rows = await measureReplicaCost({ rounds: 1, sequential: 20, pipelined: 200, inFlight: 16 });
    expect(rows.map((row) => row.name)).toEqual([
      "single server, 1 replica",
      "3-node cluster, 1 replica",
      "3-node cluster, 3 replicas",
    ]);
    for (const row of rows) {
      expect(row.sequential[0]).toBeGreaterThan(0);
      expect(row.pipelined[0]).toBeGreaterThan(0);
    }
    expect(replicaCostTable(rows, 16)).toContain("| 3-node cluster, 3 replicas |");
  });
});
