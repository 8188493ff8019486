import { describe, expect, it } from "vitest";
import { CPU_FIGURES } from "../../bench/cpu-use";
import { type Sample, SMOKE_SIZES, type Target } from "../../bench/model";
import {
  AB_HEADING,
  judgeTargets,
  keepAbSection,
  renderConsole,
  renderMarkdown,
  type Summary,
} from "../../bench/report";

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

const cpu = (node: number, postgres: number, busy: number, nats = 0, redis = 0): Summary[] => [
  summary("jetfn", node, `${METRIC}: ${CPU_FIGURES.node}`, "µs"),
  summary("jetfn", postgres, `${METRIC}: ${CPU_FIGURES.postgres}`, "µs"),
  summary("jetfn", nats, `${METRIC}: ${CPU_FIGURES.nats}`, "µs"),
  summary("jetfn", redis, `${METRIC}: ${CPU_FIGURES.redis}`, "µs"),
  summary("jetfn", busy, `${METRIC}: ${CPU_FIGURES.busy}`, "%"),
];

describe("judgeTargets", () => {
  it("judges against the best peer, and gives a missed drain rate its CPU budget per job", () => {
    const summaries = [
      summary("jetfn", 4_000),
      summary("peer a", 5_000),
      summary("peer b", 3_000),
      ...cpu(150, 200, 80, 40, 10),
    ];
    const [result] = judgeTargets([target], summaries, 2);
    expect(result?.met).toBe(false);
    expect(result?.against).toBe("peer a");
    expect(result?.figure).toBeCloseTo(0.8);
    // 10,000 jobs/s on 2 cores 80 % busy allows 160 µs a job; jetfn spends 150 + 200 + 40 + 10 = 400 µs.
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

describe("a cost target (at most a share of a baseline's CPU per job)", () => {
  const POSTGRES = `${METRIC}: ${CPU_FIGURES.postgres}`;
  const NOOP_POSTGRES = `no-op jobs: ${CPU_FIGURES.postgres}`;
  const costTarget: Target = {
    scenario: "jobs",
    metric: POSTGRES,
    contender: "jetfn",
    kind: "ratio",
    baselines: ["peer a"],
    max: 0.7,
    reason: "one Postgres carries more runtimes",
  };

  it("is met at or under the share, and says what it allows when missed", () => {
    const met = judgeTargets(
      [costTarget],
      [summary("jetfn", 140, POSTGRES, "µs"), summary("peer a", 200, POSTGRES, "µs")],
    );
    expect(met[0]).toMatchObject({ met: true, against: "peer a", note: "" });
    expect(met[0]?.figure).toBeCloseTo(0.7);
    const [missed] = judgeTargets(
      [costTarget],
      [summary("jetfn", 280, POSTGRES, "µs"), summary("peer a", 200, POSTGRES, "µs")],
    );
    expect(missed?.met).toBe(false);
    expect(missed?.note).toBe("the target allows 140 µs; jetfn spends 280 µs (2.00x the limit)");
  });

  it("takes its baseline from another scenario and metric when told to", () => {
    const crossTarget: Target = {
      ...costTarget,
      scenario: "noop",
      metric: NOOP_POSTGRES,
      baselineScenario: "jobs",
      baselineMetric: POSTGRES,
      max: 0.25,
    };
    const noop: Summary = { ...summary("jetfn", 40, NOOP_POSTGRES, "µs"), scenario: "noop" };
    const [result] = judgeTargets([crossTarget], [noop, summary("peer a", 200, POSTGRES, "µs")]);
    expect(result).toMatchObject({ met: true, against: "peer a" });
    expect(result?.figure).toBeCloseTo(0.2);
    // The same figure beside the contender's, in the baseline's own scenario, is not it.
    const [alone] = judgeTargets(
      [crossTarget],
      [noop, { ...summary("peer a", 200, NOOP_POSTGRES, "µs"), scenario: "noop" }],
    );
    expect(alone?.note).toBe("no baseline measured");
  });
});

describe("a target that must hold in every round", () => {
  const everyRound: Target = { ...target, kind: "ratio", baselines: ["peer a"], min: 1.5, everyRound: true };
  const rounds = (contender: string, values: number[]): Summary => ({
    ...summary(contender, median(values)),
    byRound: new Map(values.map((value, index) => [index + 1, value])),
  });
  const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] as number;

  it("is judged on its worst round, though the medians meet it", () => {
    // Medians 3,000 vs 1,900 (1.58x); round 2 alone is 2,000 vs 1,600 (1.25x).
    const summaries = [rounds("jetfn", [3_000, 2_000, 3_100]), rounds("peer a", [1_900, 1_600, 2_000])];
    expect(judgeTargets([{ ...everyRound, everyRound: false }], summaries)[0]?.met).toBe(true);
    const [result] = judgeTargets([everyRound], summaries);
    expect(result).toMatchObject({ met: false, against: "peer a" });
    expect(result?.figure).toBeCloseTo(1.25);
    expect(result?.note).toMatch(/^worst of 3 rounds: round 2/);
  });

  it("takes each round's best baseline, and the highest ratio for a cost", () => {
    const cost: Target = { ...everyRound, kind: "best-peer", baselines: ["peer a", "peer b"], min: undefined, max: 1 };
    const time = (contender: string, values: number[]): Summary => ({ ...rounds(contender, values), better: "lower" });
    const [result] = judgeTargets(
      [cost],
      [time("jetfn", [90, 100]), time("peer a", [100, 120]), time("peer b", [95, 80])],
    );
    // Round 1: 90 vs the better 95 (0.95x); round 2: 100 vs 80 (1.25x).
    expect(result).toMatchObject({ met: false, against: "peer b" });
    expect(result?.figure).toBeCloseTo(1.25);
  });

  it("has no baseline when no round measured both", () => {
    const [result] = judgeTargets([everyRound], [rounds("jetfn", [3_000]), summary("peer a", 1_000)]);
    expect(result?.note).toBe("no baseline measured");
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

describe("the hand-written A/B part of BENCHMARKS.md", () => {
  it("is kept after the generated report, and absent when there was none", () => {
    const previous = `# Benchmarks\n\nold figures\n\n${AB_HEADING}\n\n- change x: 1.00x\n`;
    expect(keepAbSection(previous, "# Benchmarks\n\nnew figures\n")).toBe(
      `# Benchmarks\n\nnew figures\n\n${AB_HEADING}\n\n- change x: 1.00x\n`,
    );
    expect(keepAbSection(undefined, "# Benchmarks\n")).toBe("# Benchmarks\n");
    expect(keepAbSection("# Benchmarks\n\nold\n", "# Benchmarks\n\nnew\n")).toBe("# Benchmarks\n\nnew\n");
  });
});
