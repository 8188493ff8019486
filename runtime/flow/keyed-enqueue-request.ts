import { type MsgHdrs, headers as natsHeaders } from "@nats-io/transport-node";
import { FUNCTION_HEADER, NOT_BEFORE_HEADER } from "../invocation/job-delay";
import { encodeInput, type PublishedJob } from "../nats/publish-job";
import { ID_HEADER } from "../nats/subjects";
import type { Duration } from "../support/duration";
import { JetfnError } from "../support/errors";
import { checkDebouncePeriod, checkJobKey, DEBOUNCE_KEY_HEADER, SINGLETON_KEY_HEADER } from "./job-keys";
import { checkPriority, PRIORITY_HEADER } from "./priority";

/**
 * Enqueue API answered by every runtime (flow/enqueue-api.ts), for jobs with a debounce or singleton key: claiming a key
 * needs the `JETFN_JOB_KEYS` bucket, which clients cannot reach. Request: headers
 * `Jetfn-Function`, and `Jetfn-Singleton-Key` or `Jetfn-Debounce-Key` with
 * `Jetfn-Debounce-Period` (milliseconds); optionally `Jetfn-Id`, `Jetfn-Priority`,
 * `Jetfn-Not-Before` (singleton only); body: the input as JSON. Jobs without a key are published
 * straight to the stream, as before.
 */
export const ENQUEUE_SUBJECT = "jetfn.api.enqueue";
/** Header of a debounce period in a request, in milliseconds. */
export const DEBOUNCE_PERIOD_HEADER = "Jetfn-Debounce-Period";

/** A stored job (or, for a singleton, the job already holding its key), as `enqueue` returns it. */
export interface EnqueuedJob extends PublishedJob {
  /** Singleton: the key was held, `id` is the holder's and nothing new was enqueued. */
  existing?: boolean;
  /** Debounce: a job enqueued later with the same key had already replaced this one. */
  supersededBy?: string;
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
   * period after it was enqueued; the earlier ones end `superseded`. Keys: 1-128 letters, digits
   * or `_ - . : @ / + =`; period: 100 ms to 24 h.
   * @example { key: `user:${userId}`, period: "30s" }
   */
  debounce?: { key: string; period: Duration };
  /**
   * At most one job of this function with this key is queued or running: while one is, enqueueing
   * another returns that job's id with `existing: true` and enqueues nothing.
   * @example { key: "nightly-report" }
   */
  singleton?: { key: string };
}

/** True when the enqueue needs a runtime to claim a key (the enqueue API) rather than a plain publish. */
export function needsKeyedEnqueue(options: FlowControlOptions): boolean {
  return options.debounce !== undefined || options.singleton !== undefined;
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
  if (options.debounce !== undefined && options.singleton !== undefined) {
    throw new JetfnError("E_INPUT_INVALID", "give either debounce or singleton, not both");
  }
  if (options.singleton !== undefined) {
    header.set(SINGLETON_KEY_HEADER, checkJobKey(options.singleton?.key, "singleton"));
    if (options.notBefore !== undefined) header.set(NOT_BEFORE_HEADER, String(options.notBefore));
  } else if (options.debounce !== undefined) {
    if (options.notBefore !== undefined) {
      throw new JetfnError(
        "E_INPUT_INVALID",
        "a debounced job runs one period after its enqueue: give no delay or runAt",
      );
    }
    header.set(DEBOUNCE_KEY_HEADER, checkJobKey(options.debounce?.key, "debounce"));
    header.set(DEBOUNCE_PERIOD_HEADER, String(checkDebouncePeriod(options.debounce?.period)));
  }
  return { headers: header, body: encodeInput(input, name, maxPayload) };
}
