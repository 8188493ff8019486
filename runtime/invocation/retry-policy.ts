import { type Duration, parseDuration } from "../support/duration";

/** How often a failed job is tried again, and how long to wait between attempts. */
export interface RetryOptions {
  /**
   * Total attempts, the first one included. `1` means no retry.
   * @default 3
   */
  attempts?: number;
  /**
   * Wait before attempt 2, 3, ...; the last value repeats. One value means a fixed delay.
   * @default ["1s", "10s", "1m"]
   */
  backoff?: Duration | Duration[];
}

/** A retry policy with every field resolved to numbers. */
export interface ResolvedRetryPolicy {
  readonly attempts: number;
  readonly backoffMs: readonly number[];
}

export const DEFAULT_ATTEMPTS = 3;
export const DEFAULT_BACKOFF: readonly Duration[] = ["1s", "10s", "1m"];
export const MAX_ATTEMPTS = 1_000;
/** Shortest ack wait JetStream is given; in-progress pings go out at a third of it. */
export const MIN_ACK_WAIT_MS = 1_000;

/** Validates and resolves retry options; throws a TypeError naming the bad field. */
export function resolveRetryPolicy(options: RetryOptions = {}): ResolvedRetryPolicy {
  const attempts = options.attempts ?? DEFAULT_ATTEMPTS;
  if (!Number.isInteger(attempts) || attempts < 1 || attempts > MAX_ATTEMPTS) {
    throw new TypeError(`retry.attempts must be an integer from 1 to ${MAX_ATTEMPTS}, got ${String(attempts)}`);
  }
  const backoff = options.backoff ?? DEFAULT_BACKOFF;
  const list = Array.isArray(backoff) ? backoff : [backoff];
  if (list.length === 0) throw new TypeError("retry.backoff must list at least one duration");
  const backoffMs = list.map((entry, index) => {
    try {
      return parseDuration(entry);
    } catch (error) {
      throw new TypeError(`retry.backoff[${index}]: ${(error as Error).message}`);
    }
  });
  return Object.freeze({ attempts, backoffMs: Object.freeze(backoffMs) });
}

/** Delay to wait after `failedAttempt` failed, before the next attempt. */
export function backoffDelay(policy: ResolvedRetryPolicy, failedAttempt: number): number {
  const index = Math.min(Math.max(failedAttempt - 1, 0), policy.backoffMs.length - 1);
  return policy.backoffMs[index] as number;
}

/**
 * Ack wait for a function's consumer: its timeout, capped at `maxAckWaitMs` so a crashed runtime's
 * jobs come back within seconds. Longer handlers keep their lease with in-progress pings.
 */
export function ackWaitFor(timeoutMs: number, maxAckWaitMs: number): number {
  return Math.max(Math.min(timeoutMs, maxAckWaitMs), MIN_ACK_WAIT_MS);
}

/**
 * JetStream deliveries allowed: one per attempt, plus one spare delivery on which the runtime
 * records a job whose last attempt never finished (crashed process, lost lease) as dead.
 */
export function maxDeliveriesFor(policy: ResolvedRetryPolicy): number {
  return policy.attempts + 1;
}
