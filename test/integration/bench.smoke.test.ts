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
    for (const scenario of SCENARIOS) {
      if (scenario.optIn) expect(result.table).not.toContain(scenario.title);
      else expect(result.table).toContain(scenario.title);
    }
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

  it("runs the opt-in cluster scenario: runtimes in child processes drain on a 3-node cluster at R1 and R3", {
    timeout: 300_000,
  }, async () => {
    const lines: string[] = [];
    const result = await runBench({
      smoke: true,
      only: ["cluster"],
      sizes: { clusterRuntimes: [2], clusterReplicas: [1, 3] },
      out: null,
      log: (line) => lines.push(line),
    });

    expect(result.errors, lines.join("\n")).toEqual([]);
    expect(result.checks.filter((check) => !check.ok)).toEqual([]);
    const labels = new Set(result.checks.map((check) => `${check.contender}: ${check.label}`));
    for (const replicas of ["R1", "R3"]) {
      for (const label of [
        "jobs stream replicated",
        "invocations recorded succeeded",
        "rows = jobs",
        "audit rows = rows",
      ]) {
        expect(labels).toContain(`${replicas}, 2 runtimes: ${label}`);
      }
    }
    // Both runtimes' CPU, Postgres's and the three nodes' were read: each figure is there for each drain.
    const metrics = new Set(result.samples.map((sample) => `${sample.contender} ${sample.metric}`));
    expect(metrics).toContain("R3 no-op jobs drained, 2 runtimes: CPU per job, runtimes (Node, summed)");
    expect(metrics).toContain("R3 insert-one-row jobs drained, 2 runtimes: CPU per job, NATS (3 nodes, summed)");
    expect(result.markdown).toContain("## 9. Runtimes on a 3-node NATS cluster");
    expect(result.markdown).toContain("show overhead, not scale");
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
