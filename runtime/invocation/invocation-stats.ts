import {
  type DurationHistogram,
  type DurationSummary,
  emptyHistogram,
  recordDuration,
  summarizeDurations,
} from "../support/duration-histogram";
import { type ErrorKind, errorKindOf } from "../support/error-codes";
import type { InvocationEvent, RuntimeEmitter, RuntimeEvents } from "../triggers/events";

/** Failures counted by kind. */
export type ErrorCounts = Record<ErrorKind, number>;

/** One function's numbers in this process since it started. */
export interface FunctionStats {
  fn: string;
  /** Invocations started (calls plus job attempts). */
  requests: number;
  calls: number;
  jobs: number;
  succeeded: number;
  /** Failed invocations (every failed job attempt counts). */
  errors: number;
  errorsByKind: ErrorCounts;
  /** Message of the newest failure, or "". */
  lastError: string;
  /** Job attempts that failed and will be tried again. */
  retries: number;
  /** Jobs that failed their last attempt (or could not be retried). */
  dead: number;
  inFlight: number;
  /** Sum of finished invocations' durations. */
  processingTimeMs: number;
  duration: DurationSummary;
  histogram: DurationHistogram;
  /** Invocations finished in the last minute. */
  completedLastMinute: number;
  /** Finished invocations per second over the last minute (or since start, when younger). */
  ratePerSecond: number;
}

/** Live invocation statistics of one runtime process, fed by its events. */
export interface InvocationStats {
  /** Every function seen so far, by name. */
  all(): FunctionStats[];
  /** One function's numbers; zeros when it has not run in this process. */
  get(fn: string): FunctionStats;
  /** Calls and jobs finished by this process. */
  readonly served: number;
  /** Stops listening to the events. */
  close(): void;
}

/** Seconds the processing rate looks back over. */
export const RATE_WINDOW_SECONDS = 60;

/** Zero failures of every kind. */
export function emptyErrorCounts(): ErrorCounts {
  return { invalid_input: 0, handler_error: 0, timeout: 0, non_retryable: 0, other: 0 };
}

/** Starts counting invocations from a runtime's events. `now` is injectable for tests. */
export function trackInvocationStats(events: RuntimeEmitter, now: () => number = Date.now): InvocationStats {
  return new EventFedStats(events, now);
}

class FunctionCounters {
  readonly fn: string;
  calls = 0;
  jobs = 0;
  succeeded = 0;
  errors = 0;
  errorsByKind = emptyErrorCounts();
  lastError = "";
  retries = 0;
  dead = 0;
  processingTimeMs = 0;
  maxMs = 0;
  readonly histogram = emptyHistogram();
  /** Start times of invocations running now, by kind and id. */
  readonly running = new Map<string, number>();
  /** Finished invocations per second, a ring indexed by epoch second. */
  readonly perSecond = new Map<number, number>();

  constructor(fn: string) {
    this.fn = fn;
  }
}

class EventFedStats implements InvocationStats {
  readonly #events: RuntimeEmitter;
  readonly #now: () => number;
  readonly #startedAt: number;
  readonly #functions = new Map<string, FunctionCounters>();
  #served = 0;
  readonly #onStart = (event: InvocationEvent): void => this.#start(event);
  readonly #onSuccess = (...[event]: RuntimeEvents["invocation:success"]): void =>
    this.#finish(event, event.durationMs);
  readonly #onFailure = (...[event]: RuntimeEvents["invocation:failure"]): void => this.#fail(event);
  // A run that ended at a durable sleep is no longer running; it is neither a success nor an error.
  readonly #onSuspended = (...[event]: RuntimeEvents["invocation:suspended"]): void => {
    this.#counters(event.fn).running.delete(`${event.kind}:${event.invocationId}`);
  };

  constructor(events: RuntimeEmitter, now: () => number) {
    this.#events = events;
    this.#now = now;
    this.#startedAt = now();
    events.on("invocation:start", this.#onStart);
    events.on("invocation:success", this.#onSuccess);
    events.on("invocation:failure", this.#onFailure);
    events.on("invocation:suspended", this.#onSuspended);
  }

  get served(): number {
    return this.#served;
  }

  all(): FunctionStats[] {
    return [...this.#functions.values()].map((counters) => this.#view(counters));
  }

  get(fn: string): FunctionStats {
    return this.#view(this.#functions.get(fn) ?? new FunctionCounters(fn));
  }

  close(): void {
    this.#events.off("invocation:start", this.#onStart);
    this.#events.off("invocation:success", this.#onSuccess);
    this.#events.off("invocation:failure", this.#onFailure);
    this.#events.off("invocation:suspended", this.#onSuspended);
  }

  #counters(fn: string): FunctionCounters {
    let counters = this.#functions.get(fn);
    if (!counters) {
      counters = new FunctionCounters(fn);
      this.#functions.set(fn, counters);
    }
    return counters;
  }

  #start(event: InvocationEvent): void {
    const counters = this.#counters(event.fn);
    if (event.kind === "call") counters.calls++;
    else counters.jobs++;
    // An attempt that never reported back (aborted by shutdown, database lost) is replaced by the next one of the same id.
    counters.running.set(`${event.kind}:${event.invocationId}`, this.#now());
  }

  #finish(event: InvocationEvent, durationMs: number): void {
    const counters = this.#counters(event.fn);
    counters.running.delete(`${event.kind}:${event.invocationId}`);
    counters.succeeded++;
    this.#count(counters, durationMs);
  }

  #fail(event: RuntimeEvents["invocation:failure"][0]): void {
    const counters = this.#counters(event.fn);
    counters.running.delete(`${event.kind}:${event.invocationId}`);
    counters.errors++;
    counters.errorsByKind[errorKindOf(event.error.code)]++;
    counters.lastError = `${event.error.code}: ${event.error.message}`.slice(0, 500);
    if (event.kind === "job") {
      if (event.final) counters.dead++;
      else counters.retries++;
    }
    this.#count(counters, event.durationMs);
  }

  #count(counters: FunctionCounters, durationMs: number): void {
    this.#served++;
    counters.processingTimeMs += durationMs;
    counters.maxMs = Math.max(counters.maxMs, durationMs);
    recordDuration(counters.histogram, durationMs);
    const second = Math.floor(this.#now() / 1_000);
    counters.perSecond.set(second, (counters.perSecond.get(second) ?? 0) + 1);
    for (const old of counters.perSecond.keys()) {
      if (old > second - RATE_WINDOW_SECONDS) break;
      counters.perSecond.delete(old);
    }
  }

  #view(counters: FunctionCounters): FunctionStats {
    const now = this.#now();
    const since = Math.floor(now / 1_000) - RATE_WINDOW_SECONDS;
    let completedLastMinute = 0;
    for (const [second, count] of counters.perSecond) if (second > since) completedLastMinute += count;
    const windowSeconds = Math.min(RATE_WINDOW_SECONDS, Math.max(1, (now - this.#startedAt) / 1_000));
    const finished = counters.succeeded + counters.errors;
    return {
      fn: counters.fn,
      requests: counters.calls + counters.jobs,
      calls: counters.calls,
      jobs: counters.jobs,
      succeeded: counters.succeeded,
      errors: counters.errors,
      errorsByKind: { ...counters.errorsByKind },
      lastError: counters.lastError,
      retries: counters.retries,
      dead: counters.dead,
      inFlight: counters.running.size,
      processingTimeMs: counters.processingTimeMs,
      duration: summarizeDurations(counters.histogram, counters.processingTimeMs, finished, counters.maxMs),
      histogram: { ...counters.histogram, buckets: { ...counters.histogram.buckets } },
      completedLastMinute,
      ratePerSecond: Math.round((completedLastMinute / windowSeconds) * 1_000) / 1_000,
    };
  }
}
