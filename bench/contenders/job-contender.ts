import type { RoundContext } from "../model";

/** What a job does: nothing, or insert one row. */
export type JobKind = "noop" | "insert";

/** Input of every benchmark job. */
export interface BenchJobInput {
  key: string;
  n: number;
}

/** A job system under test, with its queue filled before its workers start. */
export interface JobContender {
  readonly name: string;
  /** The Postgres database its jobs use, if any: whose backends' CPU is counted as its own. */
  readonly database?: string;
  /** Enqueues `count` jobs as fast as the system allows (many in flight or in bulk); returns ms. */
  fill(count: number): Promise<number>;
  /** Enqueues `count` jobs one after another, each awaited; returns ms. */
  enqueueSequentially(count: number): Promise<number>;
  /** Starts the workers and waits for `count` jobs; returns ms from the first job's start to the last one's end. */
  drain(count: number): Promise<number>;
  /** Checks the outcome: every job done once, rows and audit rows as expected. */
  check(count: number): Promise<CheckResult[]>;
  close(): Promise<void>;
}

/** One outcome check of a contender. */
export interface CheckResult {
  label: string;
  ok: boolean;
  detail: string;
}

/** How a peer runs its jobs. */
export interface JobContenderOptions {
  /**
   * Insert jobs with what the peer's users add by hand for jetfn's guarantees (a transaction per
   * job, a stamped audit trigger, an effects row keyed by the job's id; peer-guarantees.ts).
   * @default false
   */
  guarantees?: boolean;
}

/** Creates a contender for one round. */
export type JobContenderFactory = (
  context: RoundContext,
  kind: JobKind,
  tag: string,
  options?: JobContenderOptions,
) => Promise<JobContender>;

/** The table every insert job writes one row to (job_key repeats would be duplicates). */
export const BENCH_TABLE_SQL =
  "create table bench_rows (id bigserial primary key, job_key text not null, n integer not null, created_at timestamptz not null default now())";

/** The input of job `index`. */
export function jobInput(tag: string, index: number): BenchJobInput {
  return { key: `${tag}-${index}`, n: index };
}

/** Checks rows = jobs and no job inserted twice. */
export async function checkRows(sql: import("postgres").Sql, count: number): Promise<CheckResult[]> {
  const [row] = await sql`select count(*)::int as rows, count(distinct job_key)::int as keys from bench_rows`;
  const rows = row?.rows as number;
  const keys = row?.keys as number;
  return [
    { label: "rows = jobs", ok: rows === count, detail: `${rows} rows for ${count} jobs` },
    { label: "no duplicates", ok: keys === rows, detail: `${keys} distinct job keys in ${rows} rows` },
  ];
}

/** Longest a drain may take before the harness gives up (bounded, so a stuck run stops by itself). */
export function drainTimeoutMs(count: number): number {
  return 20_000 + count * 5;
}
