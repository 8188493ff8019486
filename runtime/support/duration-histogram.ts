/**
 * A duration histogram with log-spaced buckets, in the JSON shape carried by `$SRV.STATS`.
 * Bucket `i` holds durations in `(base * factor^(i-1), base * factor^i]` milliseconds (bucket 0:
 * up to `base`). Histograms of the same base and factor add up, so several runtimes' numbers
 * merge into exact counts and percentiles within `factor - 1` (10%).
 */
export interface DurationHistogram {
  base_ms: number;
  factor: number;
  /** Sparse counts by bucket index. */
  buckets: Record<string, number>;
}

/** The mean, median, 99th percentile and maximum of a set of durations, in milliseconds. */
export interface DurationSummary {
  count: number;
  mean: number;
  median: number;
  p99: number;
  max: number;
}

/** Smallest bucket bound, in milliseconds. */
export const HISTOGRAM_BASE_MS = 0.01;
/** Ratio between neighbouring bucket bounds. */
export const HISTOGRAM_FACTOR = 1.1;
const LOG_FACTOR = Math.log(HISTOGRAM_FACTOR);

/** An empty histogram. */
export function emptyHistogram(): DurationHistogram {
  return { base_ms: HISTOGRAM_BASE_MS, factor: HISTOGRAM_FACTOR, buckets: {} };
}

/** Counts one duration. */
export function recordDuration(histogram: DurationHistogram, durationMs: number): void {
  const index = bucketIndex(durationMs);
  histogram.buckets[index] = (histogram.buckets[index] ?? 0) + 1;
}

/** Adds `other` into `into`; histograms of another shape are refused rather than mixed up. */
export function mergeHistogram(into: DurationHistogram, other: DurationHistogram): void {
  if (other.base_ms !== into.base_ms || other.factor !== into.factor) {
    throw new TypeError(`cannot merge a histogram of base ${other.base_ms}ms and factor ${other.factor}`);
  }
  for (const [index, count] of Object.entries(other.buckets)) {
    into.buckets[index] = (into.buckets[index] ?? 0) + count;
  }
}

/** The duration below which a fraction `q` (0-1) of the counted durations fall, estimated within the bucket. */
export function histogramQuantile(histogram: DurationHistogram, q: number): number {
  const entries = sortedBuckets(histogram);
  const total = entries.reduce((sum, [, count]) => sum + count, 0);
  if (total === 0) return 0;
  const rank = Math.max(1, Math.ceil(q * total));
  let seen = 0;
  for (const [index, count] of entries) {
    if (seen + count >= rank) {
      const upper = histogram.base_ms * histogram.factor ** index;
      const lower = index === 0 ? 0 : upper / histogram.factor;
      return lower + (upper - lower) * ((rank - seen) / count);
    }
    seen += count;
  }
  return 0;
}

/** Summarises a histogram with an exact total and maximum kept beside it. */
export function summarizeDurations(
  histogram: DurationHistogram,
  totalMs: number,
  count: number,
  maxMs: number,
): DurationSummary {
  const round = (ms: number): number => Math.round(ms * 1_000) / 1_000;
  return {
    count,
    mean: count === 0 ? 0 : round(totalMs / count),
    median: round(Math.min(histogramQuantile(histogram, 0.5), maxMs)),
    p99: round(Math.min(histogramQuantile(histogram, 0.99), maxMs)),
    max: round(maxMs),
  };
}

function bucketIndex(durationMs: number): number {
  if (!(durationMs > HISTOGRAM_BASE_MS)) return 0;
  return Math.ceil(Math.log(durationMs / HISTOGRAM_BASE_MS) / LOG_FACTOR - 1e-9);
}

function sortedBuckets(histogram: DurationHistogram): [number, number][] {
  return Object.entries(histogram.buckets)
    .map(([index, count]): [number, number] => [Number(index), count])
    .filter(([, count]) => count > 0)
    .sort((a, b) => a[0] - b[0]);
}
