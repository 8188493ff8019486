import { describe, expect, it } from "vitest";
import { CLUSTER_CPU, clusterMetric } from "../../bench/cluster-metrics";
import { clusterSection } from "../../bench/cluster-section";
import { parseSizes, SMOKE_SIZES } from "../../bench/model";
import type { Summary } from "../../bench/report";

describe("parseSizes", () => {
  it("reads counts, and lists separated by / (one number too, where the size is a list)", () => {
    expect(parseSizes("clusterNoopJobs=500,clusterRuntimes=1/3,clusterReplicas=3")).toEqual({
      clusterNoopJobs: 500,
      clusterRuntimes: [1, 3],
      clusterReplicas: [3],
    });
    expect(() => parseSizes("noopJobs")).toThrow("--set expects name=value");
  });
});

function summary(metric: string, contender: string, median: number, unit = "µs"): Summary {
  const better = unit === "jobs/s" ? "higher" : "lower";
  return { scenario: "cluster", metric, contender, unit, better, median, min: median, max: median, samples: 1 };
}

/** A drain's rate and CPU figures, as the scenario records them. */
function drain(runtimes: number, contender: string, rate: number, cpu: [number, number, number, number]): Summary[] {
  const metric = clusterMetric("no-op jobs drained", runtimes);
  const [node, postgres, nats, busy] = cpu;
  return [
    summary(metric, contender, rate, "jobs/s"),
    summary(`${metric}: ${CLUSTER_CPU.runtimes}`, contender, node),
    summary(`${metric}: ${CLUSTER_CPU.postgres}`, contender, postgres),
    summary(`${metric}: ${CLUSTER_CPU.nats}`, contender, nats),
    summary(`${metric}: ${CLUSTER_CPU.busy}`, contender, busy, "%"),
  ];
}

describe("clusterSection", () => {
  const sizes = { ...SMOKE_SIZES, clusterRuntimes: [1, 2], clusterReplicas: [1, 3] };
  const summaries = [
    ...drain(1, "R1", 4_000, [100, 20, 30, 90]),
    ...drain(2, "R1", 3_000, [150, 20, 40, 95]),
    ...drain(1, "R3", 2_000, [110, 20, 90, 95]),
    ...drain(2, "R3", 1_500, [160, 20, 120, 99]),
  ];

  it("says that on this machine more runtimes show overhead, and that CPU per job is what to project from", () => {
    const section = clusterSection(summaries, sizes, 2);
    expect(section).toContain("On this 2-core machine these figures show overhead, not scale.");
    expect(section).toContain("CPU per job is the figure to project from");
  });

  it("gives each drain a row: its rate against fewer runtimes and against R1, and CPU per job summed", () => {
    const rows = clusterSection(summaries, sizes, 2)
      .split("\n")
      .filter((line) => line.startsWith("| no-op"));
    expect(rows).toEqual([
      "| no-op | R1 | 1 | 4,000 |  |  | 100 | 20.0 | 30.0 | 150 | 90.0 % |",
      "| no-op | R1 | 2 | 3,000 | 0.75x |  | 150 | 20.0 | 40.0 | 210 | 95.0 % |",
      "| no-op | R3 | 1 | 2,000 |  | 0.50x | 110 | 20.0 | 90.0 | 220 | 95.0 % |",
      "| no-op | R3 | 2 | 1,500 | 0.75x | 0.50x | 160 | 20.0 | 120 | 300 | 99.0 % |",
    ]);
  });
});
