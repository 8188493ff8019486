import type { Summary } from "./report";
import type { Services } from "./services";

/** Counts and durations of one benchmark run; `smoke` uses tiny ones. */
export interface BenchSizes {
  rounds: number;
  /** Request-reply: sequential calls timed one by one, and pipelined calls with 64 in flight. */
  sequentialCalls: number;
  pipelinedCalls: number;
  callsInFlight: number;
  /** Fire-and-forget: jobs per drain (no-op and insert). */
  noopJobs: number;
  insertJobs: number;
  /** Jobs in flight (or per bulk call) while filling a queue. */
  enqueueInFlight: number;
  /** Sequential awaited enqueues per contender. */
  singleEnqueues: number;
  /** Worker concurrency of every contender. */
  concurrency: number;
  /** Hot deploy: functions deployed, and trials of each kind. */
  deployedFunctions: number;
  deployTrials: number;
  /** Scale: function counts compared, and the idle window measured. */
  scaleCounts: number[];
  idleMs: number;
  /** Audit overhead: single-row transactions and bulk rows. */
  auditTransactions: number;
  auditBulkRows: number;
  /** Audit reads: rows in the log, and how often each query is timed. */
  auditLogRows: number;
  auditQueryTrials: number;
  /** Cluster: jobs per drain (no-op and insert), jobs drained first to warm the runtimes up, runtimes compared, and replicas compared. */
  clusterNoopJobs: number;
  clusterInsertJobs: number;
  clusterWarmupJobs: number;
  clusterRuntimes: number[];
  clusterReplicas: number[];
}

/** The full benchmark, as `npm run bench` runs it. */
export const FULL_SIZES: BenchSizes = {
  rounds: 3,
  sequentialCalls: 2_000,
  pipelinedCalls: 20_000,
  callsInFlight: 64,
  noopJobs: 20_000,
  insertJobs: 20_000,
  enqueueInFlight: 256,
  singleEnqueues: 2_000,
  concurrency: 8,
  deployedFunctions: 100,
  deployTrials: 20,
  scaleCounts: [0, 50, 500],
  idleMs: 10_000,
  auditTransactions: 4_000,
  auditBulkRows: 100_000,
  auditLogRows: 1_000_000,
  auditQueryTrials: 20,
  clusterNoopJobs: 10_000,
  clusterInsertJobs: 5_000,
  clusterWarmupJobs: 2_000,
  clusterRuntimes: [1, 2, 3],
  clusterReplicas: [1, 3],
};

/** A few-seconds version for CI: proves the harness runs, measures nothing worth quoting. */
export const SMOKE_SIZES: BenchSizes = {
  rounds: 1,
  sequentialCalls: 30,
  pipelinedCalls: 300,
  callsInFlight: 64,
  noopJobs: 300,
  insertJobs: 200,
  enqueueInFlight: 64,
  singleEnqueues: 20,
  concurrency: 8,
  deployedFunctions: 5,
  deployTrials: 2,
  scaleCounts: [0, 10],
  idleMs: 500,
  auditTransactions: 100,
  auditBulkRows: 1_000,
  auditLogRows: 2_000,
  auditQueryTrials: 3,
  clusterNoopJobs: 200,
  clusterInsertJobs: 100,
  clusterWarmupJobs: 20,
  clusterRuntimes: [2],
  clusterReplicas: [3],
};

/** `noopJobs=5000,scaleCounts=0/500` -> sizes (lists separated by `/`; a list may hold one number). */
export function parseSizes(text: string | undefined): Partial<BenchSizes> {
  const sizes: Record<string, number | number[]> = {};
  for (const pair of text?.split(",") ?? []) {
    const [name, value] = pair.split("=");
    if (!name || value === undefined) throw new Error(`--set expects name=value, got "${pair}"`);
    const isList = Array.isArray(FULL_SIZES[name.trim() as keyof BenchSizes]);
    sizes[name.trim()] = isList || value.includes("/") ? value.split("/").map(Number) : Number(value);
  }
  return sizes as Partial<BenchSizes>;
}

/** Whether a bigger number is the better one. */
export type Direction = "higher" | "lower";

/** One measured value of one contender in one round. */
export interface Sample {
  scenario: string;
  metric: string;
  contender: string;
  unit: string;
  better: Direction;
  value: number;
  round: number;
}

/** A correctness check made after a run (row counts, audit rows, no duplicates). */
export interface Check {
  scenario: string;
  round: number;
  contender: string;
  label: string;
  ok: boolean;
  detail: string;
}

/**
 * A goal the bench checks: jetfn's median compared with the baselines' (`ratio`: jetfn ÷ baseline,
 * `best-peer`: jetfn ÷ the best of several baselines) or with a fixed number (`absolute`).
 */
export interface Target {
  scenario: string;
  metric: string;
  contender: string;
  kind: "ratio" | "best-peer" | "absolute";
  /** Baseline contenders (one for `ratio`, several for `best-peer`, none for `absolute`). */
  baselines: string[];
  /** Where the baselines' figure is, when not beside the contender's. @default scenario, metric */
  baselineScenario?: string;
  baselineMetric?: string;
  /** The figure must be at least `min` / at most `max`. */
  min?: number;
  max?: number;
  /**
   * Judged round by round instead of on the medians: each round's ratio against that round's
   * baselines, and the figure is the worst of them (a goal that must hold in every round).
   */
  everyRound?: boolean;
  /** Why the goal is set, in a phrase (printed beside the verdict and in the targets table). */
  reason: string;
}

/** A contender that could not run here, and why. */
export interface Skip {
  scenario: string;
  contender: string;
  reason: string;
}

/** What a scenario gets in each round. */
export interface RoundContext {
  round: number;
  sizes: BenchSizes;
  services: Services;
  /** The contenders asked for (`--contenders`); the job scenarios skip the others. @default all */
  contenders?: readonly string[];
  /** Records a sample under this scenario (or under `scenario` when given). */
  record(sample: Omit<Sample, "scenario" | "round"> & { scenario?: string }): void;
  check(contender: string, label: string, ok: boolean, detail: string): void;
  skip(contender: string, reason: string): void;
  log(message: string): void;
}

/** One benchmark scenario: run once per round, taking turns between its contenders. */
export interface Scenario {
  id: string;
  title: string;
  /** Baselines shown as ratios in the report, per metric (jetfn ÷ baseline; a function when they depend on the sizes). */
  baselines: Record<string, string[]> | ((sizes: BenchSizes) => Record<string, string[]>);
  /** Goals checked against the medians (a function when they depend on the sizes). */
  targets: Target[] | ((sizes: BenchSizes) => Target[]);
  /** Runs only when named (`--only <id>`), not in a full run. @default false */
  optIn?: boolean;
  /** A section of its own in the report, after the results table, from its medians (markdown). */
  section?(summaries: readonly Summary[], sizes: BenchSizes): string;
  run(context: RoundContext): Promise<void>;
}
