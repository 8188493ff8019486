import type { Logger } from "pino";
import { JetfnError } from "../support/errors";
import { isReplicaPlacementRefusal, type ReplicaPlacementError } from "./stream-replicas";

/**
 * Longest a start-up request is asked again for, counted from its first try (ms). A JetStream
 * request waits 5 s for its answer (JETSTREAM_TIMEOUT_MS), so this allows about five tries: a
 * server slow to answer while runtimes start on a loaded machine answers within it, one that stays
 * silent longer fails the start, and the process supervisor (or the operator) starts it again.
 */
export const DEFAULT_ANSWER_WAIT_MS = 30_000;
/**
 * Longest a start-up request is asked again for while a NATS cluster refuses the replicas or
 * placement it asks for, counted from its first try (ms). A cluster refuses so while it forms
 * (servers and runtimes started together: a meta leader is elected by two of three servers, and a
 * stream of 3 replicas waits for the third) and for a few seconds after a node restarts. A cluster
 * that refuses longer is too small for JETFN_REPLICAS (or has no server with the placement tags),
 * and the start fails with E_CONFIG_INVALID.
 */
export const DEFAULT_PLACEMENT_WAIT_MS = 60_000;
/** Waits before asking again, one step per unanswered try in a row; the last step repeats (ms). */
export const ANSWER_BACKOFF_MS: readonly number[] = Object.freeze([250, 500, 1_000, 2_000]);

/** How a request is asked again. */
export interface UntilAnsweredOptions {
  /** Gets a warning per try that went unanswered. */
  logger: Logger;
  /** No try starts later than this after the first (ms). @default DEFAULT_ANSWER_WAIT_MS */
  totalMs?: number;
  /** Ends the waiting, and the asking, when aborted (the runtime is stopping). */
  signal?: AbortSignal;
}

/**
 * JetStream's "temporarily unavailable" (503): a cluster without a meta leader answers so once it
 * has been leaderless for a while (its servers stay silent before that), e.g. while NATS nodes and
 * runtimes restart together.
 */
export const JETSTREAM_TEMPORARILY_UNAVAILABLE = 10008;

/**
 * True when NATS did not answer a request in time (nats.js's TimeoutError), or JetStream said it is
 * temporarily unavailable: the same request may be answered when asked again. Any other failure is
 * an answer: a refusal (permissions, a bad stream config), "no responders" (nats.js reports
 * JetStream's as JetStreamNotEnabled: the server or the account has no JetStream, which waiting
 * does not change) or a closed connection.
 */
export function isUnanswered(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  return error.name === "TimeoutError" || (error as { code?: unknown }).code === JETSTREAM_TEMPORARILY_UNAVAILABLE;
}

/**
 * Runs `request` (a JetStream management request, or an idempotent step of a few) and asks again,
 * after a short back-off, while NATS does not answer it in time, for up to `totalMs`; then fails
 * with E_UNAVAILABLE naming `what`. A cluster's refusal of the replicas asked for
 * (isReplicaPlacementRefusal) is asked again the same way for up to DEFAULT_PLACEMENT_WAIT_MS, then thrown
 * as it is (E_CONFIG_INVALID naming JETFN_REPLICAS). Other failures are thrown at once. Only for
 * what a runtime sets up (start, deploy), never for a job's own publishes and acks: `request` must
 * be safe to repeat, since an unanswered request may still have been carried out.
 */
export async function untilAnswered<T>(
  what: string,
  request: () => Promise<T>,
  options: UntilAnsweredOptions,
): Promise<T> {
  const started = Date.now();
  for (let tries = 1; ; tries++) {
    try {
      return await request();
    } catch (error) {
      const refused = isReplicaPlacementRefusal(error);
      if (!refused && !isUnanswered(error)) throw error;
      const elapsedMs = Date.now() - started;
      const retryInMs = ANSWER_BACKOFF_MS[Math.min(tries, ANSWER_BACKOFF_MS.length) - 1] ?? 0;
      const giveUp = (): Error => (refused ? error : unanswered(what, tries, Date.now() - started, error));
      const limitMs = refused ? DEFAULT_PLACEMENT_WAIT_MS : (options.totalMs ?? DEFAULT_ANSWER_WAIT_MS);
      if (options.signal?.aborted || elapsedMs + retryInMs > limitMs) throw giveUp();
      const asking = { request: what, tries, elapsedMs, retryInMs };
      if (refused) warnRefused(options.logger, error, { ...asking, waitsUpToMs: limitMs });
      else options.logger.warn({ err: error, ...asking }, "NATS did not answer in time; asking again.");
      await pause(retryInMs, options.signal);
      if (options.signal?.aborted) throw giveUp();
    }
  }
}

function warnRefused(logger: Logger, refusal: ReplicaPlacementError, asking: Record<string, unknown>): void {
  logger.warn(
    {
      setting: "JETFN_REPLICAS",
      replicas: refusal.replicas,
      ...(refusal.placementTags.length > 0 ? { placementTags: refusal.placementTags } : {}),
      serverSaid: refusal.serverSaid,
      ...asking,
    },
    "The NATS cluster refused the replicas JETFN_REPLICAS asks for (still forming, or a node restarting?); asking again.",
  );
}

function unanswered(what: string, tries: number, elapsedMs: number, cause: unknown): JetfnError {
  const seconds = Math.round(elapsedMs / 100) / 10;
  return new JetfnError(
    "E_UNAVAILABLE",
    `NATS did not answer in time when asked for ${what} (${tries} ${tries === 1 ? "try" : "tries"} over ${seconds} s)`,
    { cause },
  );
}

/** Resolves after `ms`, or at once when `signal` aborts. */
function pause(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}
