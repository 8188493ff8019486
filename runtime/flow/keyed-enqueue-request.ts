import { type MsgHdrs, headers as natsHeaders } from "@nats-io/transport-node";
import { FUNCTION_HEADER, NOT_BEFORE_HEADER } from "../invocation/job-delay";
import { JETSTREAM_TIMEOUT_MS } from "../nats/jetstream-timeout";
import { encodeInput, type PublishedJob } from "../nats/publish-job";
import { ID_HEADER } from "../nats/subjects";
import type { Duration } from "../support/duration";
import { JetfnError } from "../support/errors";
import {
  checkDebounceMaxWait,
  checkDebouncePeriod,
  checkJobKey,
  DEBOUNCE_KEY_HEADER,
  DEBOUNCE_MAX_WAIT_HEADER,
  DEBOUNCE_PERIOD_HEADER,
  SINGLETON_KEY_HEADER,
} from "./job-keys";
import { checkPriority, PRIORITY_HEADER } from "./priority";

/**
 * Enqueue API answered by every runtime (flow/enqueue-api.ts), for jobs with a debounce or singleton key: claiming a key
 * needs the `JETFN_JOB_KEYS` bucket, which clients cannot reach. Request: headers
 * `Jetfn-Function`, and `Jetfn-Singleton-Key` or `Jetfn-Debounce-Key` with
 * `Jetfn-Debounce-Period` (milliseconds) and optionally `Jetfn-Debounce-Max-Wait` (milliseconds);
 * optionally `Jetfn-Id`, `Jetfn-Priority`, `Jetfn-Not-Before` (singleton only); body: the input as
 * JSON. Jobs without a key are published straight to the stream, as before. The same key headers
 * travel in keyed outbox rows (`ctx.enqueue`, `enqueueInTransaction`), which the relay enqueues the
 * same way once their transaction committed.
 */
export const ENQUEUE_SUBJECT = "jetfn.api.enqueue";

/**
 * How long a client waits for the answer to a keyed enqueue. The runtime's work for one is several
 * JetStream requests in a row (the key's claim read and written, the publish, the job's sequence
 * written into the claim), each allowed JETSTREAM_TIMEOUT_MS, and Postgres look-ups. A client that
 * waited as long as one of them gave up while a slow key-value write still let the runtime store
 * the job, and did not learn its id; waiting four times as long, it gets the runtime's own answer,
 * which comes by the runtime's deadline, derived from this (KEYED_ENQUEUE_DEADLINE_MS).
 */
export const KEYED_ENQUEUE_TIMEOUT_MS = 4 * JETSTREAM_TIMEOUT_MS;

/** A stored job (or, for a singleton, the job already holding its key), as `enqueue` returns it. */
export interface EnqueuedJob extends PublishedJob {
  /** Singleton: the key was held, `id` is the holder's and nothing new was enqueued. */
  existing?: boolean;
  /** Debounce: a job enqueued later with the same key had already replaced this one. */
  supersededBy?: string;
}

/** Debounce options of one enqueue. */
export interface DebounceOptions {
  /** Jobs with the same key (and function) debounce each other. */
  key: string;
  /** How long after its enqueue a job runs, unless a later job of its key replaces it (100 ms to 24 h). */
  period: Duration;
  /**
   * Longest the first job of a burst may be put off: once the oldest job of the key has waited this
   * long, the latest one runs, even while enqueues keep coming. At least `period`, at most 24 h.
   * @default unbounded: an endless stream of enqueues postpones the run forever
   * @example { key: `doc:${docId}`, period: "5s", maxWait: "1m" }
   */
  maxWait?: Duration;
}

/** Flow control of one enqueue: priority, debounce, singleton. */
export interface FlowControlOptions {
  /**
   * 0 (the default) to 3: with a backlog, a function's jobs of a higher priority start first.
   * @default 0
   */
  priority?: number;
  /**
   * Of the jobs enqueued with this key within `period` of each other, only the last runs, one
   * period after it was enqueued; the earlier ones end `superseded`. `maxWait` bounds how long a
   * burst may put off its run. Keys: 1-128 letters, digits or `_ - . : @ / + =`; period: 100 ms to
   * 24 h. Not with `delay`/`runAt`.
   * @example { key: `user:${userId}`, period: "30s" }
   */
  debounce?: DebounceOptions;
  /**
   * At most one job of this function with this key is queued or running: while one is, enqueueing
   * another returns that job's id with `existing: true` and enqueues nothing (from `ctx.enqueue`,
   * which cannot wait for that answer, the id returned ends `superseded`: see docs/flow-control-keys-and-priority.md).
   * @example { key: "nightly-report" }
   */
  singleton?: { key: string };
}

/** The singleton or debounce key of an enqueue, checked, as the runtime reads it from headers. */
export interface JobKeyRequest {
  singleton?: string;
  debounce?: { key: string; periodMs: number; maxWaitMs?: number };
}

/** True when the enqueue needs a runtime to claim a key (the enqueue API) rather than a plain publish. */
export function needsKeyedEnqueue(options: FlowControlOptions): boolean {
  return options.debounce !== undefined || options.singleton !== undefined;
}

/**
 * The key headers of an enqueue (none without a key), checked: E_INPUT_INVALID for a bad key,
 * period or maxWait, for both keys at once, or for a debounced job given a due time.
 */
export function keyHeaders(options: FlowControlOptions & { notBefore?: number }): Record<string, string> {
  const { debounce, singleton } = options;
  if (debounce !== undefined && singleton !== undefined) {
    throw new JetfnError("E_INPUT_INVALID", "give either debounce or singleton, not both");
  }
  if (singleton !== undefined) return { [SINGLETON_KEY_HEADER]: checkJobKey(singleton?.key, "singleton") };
  if (debounce === undefined) return {};
  if (options.notBefore !== undefined) throw debouncedWithDueTime();
  const periodMs = checkDebouncePeriod(debounce?.period);
  const headers: Record<string, string> = {
    [DEBOUNCE_KEY_HEADER]: checkJobKey(debounce?.key, "debounce"),
    [DEBOUNCE_PERIOD_HEADER]: String(periodMs),
  };
  if (debounce.maxWait !== undefined) {
    headers[DEBOUNCE_MAX_WAIT_HEADER] = String(checkDebounceMaxWait(debounce.maxWait, periodMs));
  }
  return headers;
}

/**
 * Reads the key headers of a request or outbox row (`header` gives a header's value, undefined when
 * absent), checked as `keyHeaders` writes them; undefined when there is no key.
 */
export function readKeyHeaders(
  header: (name: string) => string | undefined,
  notBefore: number | undefined,
): JobKeyRequest | undefined {
  const singleton = header(SINGLETON_KEY_HEADER);
  const debounceKey = header(DEBOUNCE_KEY_HEADER);
  const period = header(DEBOUNCE_PERIOD_HEADER);
  const maxWait = header(DEBOUNCE_MAX_WAIT_HEADER);
  if (singleton !== undefined && debounceKey !== undefined) {
    throw new JetfnError("E_INPUT_INVALID", "a job has either a singleton key or a debounce key, not both");
  }
  if (debounceKey === undefined && (period !== undefined || maxWait !== undefined)) {
    throw new JetfnError(
      "E_INPUT_INVALID",
      `${DEBOUNCE_PERIOD_HEADER} and ${DEBOUNCE_MAX_WAIT_HEADER} need a debounce key`,
    );
  }
  if (singleton !== undefined) return { singleton: checkJobKey(singleton, "singleton") };
  if (debounceKey === undefined) return undefined;
  if (notBefore !== undefined) throw debouncedWithDueTime();
  const periodMs = checkDebouncePeriod(milliseconds(period));
  const debounce: JobKeyRequest["debounce"] = { key: checkJobKey(debounceKey, "debounce"), periodMs };
  if (maxWait !== undefined) debounce.maxWaitMs = checkDebounceMaxWait(milliseconds(maxWait) as Duration, periodMs);
  return { debounce };
}

/** Digits are milliseconds; anything else is checked as a readable duration (and refused if it is none). */
function milliseconds(value: string | undefined): Duration | undefined {
  return value !== undefined && /^[0-9]{1,12}$/.test(value) ? Number(value) : value;
}

function debouncedWithDueTime(): JetfnError {
  return new JetfnError("E_INPUT_INVALID", "a debounced job runs one period after its enqueue: give no delay or runAt");
}

/** The headers and body of a request to the enqueue API, checked before it is sent. */
export function keyedEnqueueRequest(
  name: string,
  input: unknown,
  options: FlowControlOptions & { id?: string; notBefore?: number },
  maxPayload?: number,
): { headers: MsgHdrs; body: Uint8Array } {
  const header = natsHeaders();
  header.set(FUNCTION_HEADER, name);
  if (options.id !== undefined) header.set(ID_HEADER, options.id);
  if (options.priority !== undefined) header.set(PRIORITY_HEADER, String(checkPriority(options.priority)));
  for (const [key, value] of Object.entries(keyHeaders(options))) header.set(key, value);
  if (options.singleton !== undefined && options.notBefore !== undefined) {
    header.set(NOT_BEFORE_HEADER, String(options.notBefore));
  }
  return { headers: header, body: encodeInput(input, name, maxPayload) };
}
