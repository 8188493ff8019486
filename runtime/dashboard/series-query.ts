import type { Sql, TransactionSql } from "postgres";
import type { ChartRange } from "./chart-range";

/** One bar of the charts: what ended in `[at, at + bucketMs)`. */
export interface SeriesBucket {
  /** Start of the bucket, ms since the epoch. */
  at: number;
  /** Jobs whose last attempt succeeded. */
  succeeded: number;
  /** Attempts that failed (a retry followed, or the job died); cancels are not errors. */
  errors: number;
  /** Median and 99th percentile of the last attempt of the jobs that ended (succeeded or dead), ms. */
  p50: number | null;
  p99: number | null;
}

/** A function's (or every function's) figures over a range, one bucket per bar, oldest first. */
export interface Series {
  range: ChartRange;
  /** Start of the first bucket and end of the last, ms since the epoch. */
  from: number;
  to: number;
  buckets: SeriesBucket[];
}

/** Longest the chart query may run; a bigger window than the database can add up in it says so. */
export const SERIES_QUERY_TIMEOUT_MS = 5_000;

/**
 * Reads the figures of the charts from `jetfn.invocations`, which every runtime writes: the whole
 * deployment's jobs, not one process's. Bounded three ways: only rows written in the window (the
 * updated_at BRIN index, migration 0024), a fixed number of buckets per range, and a statement
 * timeout. Calls (request-reply) write no record and are not counted here.
 */
export async function readSeries(sql: Sql, range: ChartRange, fn?: string, now = Date.now()): Promise<Series> {
  const to = Math.ceil((now + 1) / range.bucketMs) * range.bucketMs;
  const from = to - range.spanMs;
  const since = new Date(from).toISOString();
  const until = new Date(to).toISOString();
  const rows = await sql.begin(async (transaction) => {
    await setLimits(transaction);
    return transaction<{ bucket: string; succeeded: number; errors: number; p50: number | null; p99: number | null }[]>`
      with touched as (
        select status, started_at, finished_at, errors from jetfn.invocations
        where updated_at >= ${since} ${fn === undefined ? transaction`` : transaction`and function = ${fn}`}
      ), ended as (
        select finished_at as at, status = 'succeeded' as ok, false as error,
               date_part('epoch', finished_at - started_at) * 1000 as ms
        from touched where status in ('succeeded', 'dead') and finished_at >= ${since}
        union all
        select (failure.value->>'at')::timestamptz, false, true, null
        from touched cross join lateral jsonb_array_elements(touched.errors) as failure
        where touched.errors <> '[]'::jsonb and failure.value->>'code' is distinct from 'E_CANCELLED'
          and (failure.value->>'at')::timestamptz >= ${since}
      )
      select (date_part('epoch', date_bin(${`${range.bucketMs} milliseconds`}::interval, at, 'epoch')) * 1000)::bigint::text as bucket,
             (count(*) filter (where ok))::int as succeeded, (count(*) filter (where error))::int as errors,
             percentile_cont(0.5) within group (order by ms) as p50,
             percentile_cont(0.99) within group (order by ms) as p99
      from ended where at < ${until}
      group by 1`;
  });
  return { range, from, to, buckets: fillBuckets(rows, range.bucketMs, from, to) };
}

/**
 * Limits of a dashboard read, for its transaction: the statement timeout; no JIT (it compiled for
 * over a second, longer than a 24-hour query ran); sorts for the percentiles in memory.
 */
export async function setLimits(transaction: TransactionSql): Promise<void> {
  await transaction`select set_config('statement_timeout', ${String(SERIES_QUERY_TIMEOUT_MS)}, true),
    set_config('jit', 'off', true), set_config('work_mem', '32MB', true)`;
}

/** Every bucket of the window, with zeros (and no durations) where nothing ended. */
function fillBuckets(
  rows: readonly { bucket: string; succeeded: number; errors: number; p50: number | null; p99: number | null }[],
  bucketMs: number,
  from: number,
  to: number,
): SeriesBucket[] {
  const byStart = new Map(rows.map((row) => [Number(row.bucket), row]));
  const buckets: SeriesBucket[] = [];
  for (let at = from; at < to; at += bucketMs) {
    const row = byStart.get(at);
    buckets.push({
      at,
      succeeded: row?.succeeded ?? 0,
      errors: row?.errors ?? 0,
      p50: row?.p50 === null || row?.p50 === undefined ? null : Number(row.p50),
      p99: row?.p99 === null || row?.p99 === undefined ? null : Number(row.p99),
    });
  }
  return buckets;
}
