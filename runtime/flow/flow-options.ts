import { type Duration, formatDuration, parseDuration } from "../support/duration";

/**
 * Flow control a function declares: a concurrency limit across every runtime and a rate limit on
 * starts, each for the whole function or per key. Both are enforced with leases and start slots
 * in the key-value bucket `JETFN_FLOW`; a job over a limit waits in `JETFN_JOBS_WAITING` without
 * spending an attempt (see docs/flow-control.md).
 */

/** A key computed from a job's parsed input (a tenant id, an account): each key gets its own limit. */
export type FlowKey<Input> = (input: Input) => string | number;

/** At most `limit` jobs of the function (or of one key) run at once, across every runtime. */
export interface ConcurrencyLimitOptions<Input = unknown> {
  /** Jobs running at once, across all runtimes (per key when `key` is given). From 1 to 1,000. */
  limit: number;
  /**
   * The key the limit applies to, from the parsed input; without it the limit is the function's.
   * @example key: (input) => input.tenantId
   */
  key?: FlowKey<Input>;
}

/** At most `limit` jobs of the function (or of one key) start per `period`, across every runtime. */
export interface RateLimitOptions<Input = unknown> {
  /** Starts allowed in any window of `period`. From 1 to 1,000. */
  limit: number;
  /** The window: from `"100ms"` to `"1d"`. */
  period: Duration;
  /** The key the limit applies to, from the parsed input; without it the limit is the function's. */
  key?: FlowKey<Input>;
}

/** A resolved limit: its kind, its size and its key. */
export interface ResolvedLimit {
  /** `c`: concurrency (leases); `r`: rate (start slots). Also the first token of its keys. */
  readonly kind: "c" | "r";
  readonly limit: number;
  /** For a rate limit: its window. For a concurrency limit: 0. */
  readonly periodMs: number;
  readonly key: FlowKey<unknown> | undefined;
}

/** A function's flow control: the limits a job must pass before it runs, in that order. */
export interface ResolvedFlow {
  readonly limits: readonly ResolvedLimit[];
}

/** Largest limit: every slot is one key in the bucket, watched by every runtime. */
export const MAX_FLOW_LIMIT = 1_000;
export const MIN_RATE_PERIOD_MS = 100;
export const MAX_RATE_PERIOD_MS = 86_400_000;

/** Checks `concurrencyLimit` and `rateLimit`; throws a TypeError naming the bad field. */
export function resolveFlow(
  concurrencyLimit: ConcurrencyLimitOptions<never> | undefined,
  rateLimit: RateLimitOptions<never> | undefined,
): ResolvedFlow | undefined {
  const limits: ResolvedLimit[] = [];
  if (concurrencyLimit !== undefined) {
    limits.push(resolveLimit("concurrencyLimit", "c", concurrencyLimit, 0));
  }
  if (rateLimit !== undefined) {
    let periodMs = 0;
    try {
      periodMs = parseDuration((rateLimit as { period?: Duration } | null)?.period ?? "");
    } catch (error) {
      throw new TypeError(`rateLimit.period: ${(error as Error).message}`);
    }
    if (periodMs < MIN_RATE_PERIOD_MS || periodMs > MAX_RATE_PERIOD_MS) {
      throw new TypeError(`rateLimit.period must be from 100ms to 1d, got ${String(rateLimit.period)}`);
    }
    limits.push(resolveLimit("rateLimit", "r", rateLimit, periodMs));
  }
  return limits.length === 0 ? undefined : Object.freeze({ limits: Object.freeze(limits) });
}

function resolveLimit(
  option: string,
  kind: "c" | "r",
  value: { limit?: unknown; key?: unknown } | null,
  periodMs: number,
): ResolvedLimit {
  if (typeof value !== "object" || value === null) throw new TypeError(`${option} must be an object with a limit`);
  const { limit, key } = value;
  if (typeof limit !== "number" || !Number.isInteger(limit) || limit < 1 || limit > MAX_FLOW_LIMIT) {
    throw new TypeError(`${option}.limit must be an integer from 1 to ${MAX_FLOW_LIMIT}, got ${String(limit)}`);
  }
  if (key !== undefined && typeof key !== "function")
    throw new TypeError(`${option}.key must be a function of the input`);
  return Object.freeze({ kind, limit, periodMs, key: key as FlowKey<unknown> | undefined });
}

/** The limits as `jetfn ls` shows them: `concurrency 2 per key`, `rate 10/1s`. */
export function describeFlow(flow: ResolvedFlow | undefined): string[] {
  return (flow?.limits ?? []).map((limit) => {
    const scope = limit.key ? " per key" : "";
    return limit.kind === "c"
      ? `concurrency ${limit.limit}${scope}`
      : `rate ${limit.limit}/${formatDuration(limit.periodMs)}${scope}`;
  });
}
