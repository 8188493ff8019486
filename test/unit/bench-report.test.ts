import { describe, expect, it } from "vitest";
import { CPU_FIGURES } from "../../bench/cpu-use";
import { type Sample, SMOKE_SIZES, type Target } from "../../bench/model";
import { judgeTargets, renderConsole, renderMarkdown, type Summary } from "../../bench/report";

const METRIC = "jobs drained";

function summary(contender: string, median: number, metric = METRIC, unit = "jobs/s"): Summary {
  const better = metric === METRIC ? "higher" : "lower";
  return { scenario: "jobs", metric, contender, unit, better, median, min: median, max: median, samples: 3 };
}

const target: Target = {
  scenario: "jobs",
  metric: METRIC,
  contender: "jetfn",
  kind: "best-peer",
  baselines: ["peer a", "peer b"],
  min: 2,
  reason: "peers write one row per round trip",
};

const cpu = (node: number, servers: number, busy: number): Summary[] => [
  summary("jetfn", node, `${METRIC}: ${CPU_FIGURES.node}`, "µs"),
  summary("jetfn", servers, `${METRIC}: ${CPU_FIGURES.servers}`, "µs"),
  summary("jetfn", busy, `${METRIC}: ${CPU_FIGURES.busy}`, "%"),
];

describe("judgeTargets", () => {
  it("judges against the best peer, and gives a missed drain rate its CPU budget per job", () => {
    const summaries = [
      summary("jetfn", 4_000),
      summary("peer a", 5_000),
      summary("peer b", 3_000),
      ...cpu(150, 250, 80),
    ];
    const [result] = judgeTargets([target], summaries, 2);
    expect(result?.met).toBe(false);
    expect(result?.against).toBe("peer a");
    expect(result?.figure).toBeCloseTo(0.8);
    // 10,000 jobs/s on 2 cores 80 % busy allows 160 µs a job; jetfn spends 150 + 250 = 400 µs.
    expect(result?.note).toBe(
      "at 80 % of 2 cores, 10,000 jobs/s allows 160 µs of CPU per job; jetfn spends 400 µs (2.50x the budget)",
    );
  });

  it("adds no budget to a met target, nor to a rate measured without CPU figures", () => {
    const met = judgeTargets(
      [target],
      [summary("jetfn", 11_000), summary("peer a", 5_000), summary("peer b", 3_000), ...cpu(1, 1, 50)],
      2,
    );
    expect(met[0]).toMatchObject({ met: true, note: "" });
    const bare = judgeTargets([target], [summary("jetfn", 4_000), summary("peer a", 5_000)], 2);
    expect(bare[0]).toMatchObject({ met: false, note: "not measured here: peer b" });
  });
});

describe("the report", () => {
  it("states beside each target why it is set", () => {
    const sample = (contender: string, value: number): Sample => ({
      scenario: "jobs",
      metric: METRIC,
      contender,
      unit: "jobs/s",
      better: "higher",
      value,
      round: 1,
    });
    const samples = [sample("jetfn", 4_000), sample("peer a", 5_000)];
    const input = {
      scenarios: [{ id: "jobs", title: "1. Jobs", baselines: {}, targets: [target], run: async () => {} }],
      sizes: SMOKE_SIZES,
      samples,
      checks: [],
      skips: [],
      errors: [],
      command: "npm run bench",
      versions: {},
      startedAt: new Date(0),
      durationMs: 1_000,
      loadBefore: [0, 0, 0],
    };
    expect(renderConsole(input)).toContain("peers write one row per round trip");
    const markdown = renderMarkdown(input);
    expect(markdown).toContain("| verdict | scenario | metric | contender | figure | target | why | note |");
    expect(markdown).toContain("| peers write one row per round trip |");
    expect(markdown).not.toMatch(/issue \d/i);
  });
});
