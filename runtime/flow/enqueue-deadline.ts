import type { Logger } from "pino";
import { JETSTREAM_TIMEOUT_MS } from "../nats/jetstream-timeout";
import { JetfnError } from "../support/errors";
import { type EnqueuedJob, KEYED_ENQUEUE_TIMEOUT_MS } from "./keyed-enqueue-request";

/**
 * How long a runtime works on one keyed enqueue before it answers anyway (15 s): the client's wait
 * (KEYED_ENQUEUE_TIMEOUT_MS) less one JetStream request, so the answer reaches a client that is
 * still waiting, and the two cannot drift apart.
 */
export const KEYED_ENQUEUE_DEADLINE_MS = KEYED_ENQUEUE_TIMEOUT_MS - JETSTREAM_TIMEOUT_MS;

/**
 * The steps of a keyed enqueue, which report to its deadline. In order:
 *
 * 1. Reads (the chosen id's places, the key's claim, the holder's record, the delayed stream's
 *    creation): abandoned at the deadline even in flight; they write nothing.
 * 2. Writes before the publish: a singleton's claim (`beforeWrite`), started only when a JetStream
 *    request still fits before the deadline; a claim whose job is then not published is given back
 *    (enqueueSingleton). Debounce's maxWait marks the key's waiting job released: left as it is,
 *    since that burst had ended anyway.
 * 3. The publish (`beforePublish`), the point of no return: started only when it fits before the
 *    deadline. A deadline that still finds it unanswered says the job may have been stored.
 * 4. After it (`stored`: the singleton's sequence written into its claim; debounce taking its key
 *    and superseding the job it replaces): never cut off. They go on after the deadline, which
 *    answers with the stored job; a failure of theirs leaves the job stored, and is answered so.
 */
export interface EnqueueSteps {
  /** Before a write that precedes the publish: throws (nothing stored) when it is too late for one. */
  beforeWrite(): void;
  /** Before the publish: as `beforeWrite`; from then on the job may be stored. */
  beforePublish(): void;
  /** The job is stored (or, for a singleton, folded into the holder): the answer. */
  stored(job: EnqueuedJob): void;
}

/** Steps of an enqueue nobody waits for (the outbox relay): no deadline. */
export const UNBOUNDED_STEPS: EnqueueSteps = {
  beforeWrite: () => undefined,
  beforePublish: () => undefined,
  stored: () => undefined,
};

/** How far a keyed enqueue got: what its answer says about the job. */
export type EnqueueOutcome = "not-stored" | "unknown" | "stored";

/** A keyed enqueue run against its deadline. */
export interface DeadlineRun {
  /** The work's answer, or the deadline's when it comes first. */
  answer: Promise<EnqueuedJob>;
  /** Settles when the work has ended, which may be after the answer: what the answer said, and what became of the job. */
  done: Promise<{ overran: boolean; answered: EnqueueOutcome; outcome: EnqueueOutcome }>;
}

/** The keyed enqueue a deadline is for. */
interface DeadlineJob {
  fn: string;
  id: string;
  /** Where a failure after the job was stored is reported (it is answered with the job). */
  logger: Logger;
}

/** Runs `work` (the steps of a keyed enqueue of `job`) and answers by the deadline at the latest. */
export function runWithinDeadline(
  job: DeadlineJob,
  work: (steps: EnqueueSteps) => Promise<EnqueuedJob>,
  deadlineMs: number = KEYED_ENQUEUE_DEADLINE_MS,
): DeadlineRun {
  const steps = new DeadlineSteps(job, deadlineMs);
  let overran: EnqueueOutcome | undefined;
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<EnqueuedJob>((resolve, reject) => {
    timer = setTimeout(() => {
      overran = steps.outcome();
      if (steps.job) resolve(steps.job);
      else reject(overran === "unknown" ? maybeStored(job) : steps.stop());
    }, deadlineMs);
  });
  const finished = Promise.resolve()
    .then(() => work(steps))
    .catch((error: unknown) => steps.answerFailure(error))
    .finally(() => clearTimeout(timer));
  const done = finished.then(
    () => steps.outcome(),
    () => steps.outcome(),
  );
  return {
    answer: Promise.race([finished, deadline]),
    done: done.then((outcome) => ({ overran: overran !== undefined, answered: overran ?? outcome, outcome })),
  };
}

class DeadlineSteps implements EnqueueSteps {
  readonly #job: DeadlineJob;
  readonly #deadlineMs: number;
  readonly #at: number;
  #phase: "before" | "stopped" | "publishing" | "stored" = "before";
  job: EnqueuedJob | undefined;

  constructor(job: DeadlineJob, deadlineMs: number) {
    this.#job = job;
    this.#deadlineMs = deadlineMs;
    this.#at = Date.now() + deadlineMs;
  }

  beforeWrite(): void {
    // A write that might still be unanswered at the deadline would leave the answer unsure.
    if (this.#phase === "stopped" || Date.now() + JETSTREAM_TIMEOUT_MS > this.#at) throw this.stop();
  }

  beforePublish(): void {
    this.beforeWrite();
    this.#phase = "publishing";
  }

  stored(job: EnqueuedJob): void {
    this.job = job;
    this.#phase = "stored";
  }

  outcome(): EnqueueOutcome {
    if (this.#phase === "stored") return "stored";
    return this.#phase === "publishing" ? "unknown" : "not-stored";
  }

  /** Stops the work at its next write: nothing is stored from now on. */
  stop(): JetfnError {
    this.#phase = "stopped";
    return notStored(this.#job, this.#deadlineMs);
  }

  /** What a failure of the work answers: the job, once stored; unsure when the publish went unanswered. */
  answerFailure(error: unknown): EnqueuedJob {
    if (this.#phase === "stored" && this.job) {
      const { fn, id, logger } = this.#job;
      logger.warn({ err: error, fn, invocationId: id }, "A keyed enqueue failed after its job was stored.");
      return this.job;
    }
    if (this.#phase === "publishing" && publishUnconfirmed(error)) throw maybeStored(this.#job, error);
    throw error;
  }
}

/**
 * A publish that got no answer (timed out, or its connection closed) may have been stored. Not
 * nats/until-answered.ts's isUnanswered, which asks whether a request may be answered if asked again
 * (JetStream's "temporarily unavailable" stored nothing).
 */
export function publishUnconfirmed(error: unknown): boolean {
  const cause = error instanceof Error && error.cause instanceof Error ? error.cause : error;
  const name = (cause as { name?: unknown } | null)?.name;
  return name === "TimeoutError" || name === "RequestError";
}

function notStored(job: DeadlineJob, deadlineMs: number): JetfnError {
  return new JetfnError(
    "E_UNAVAILABLE",
    `keyed enqueue of ${job.fn} stopped before its job was stored, to answer within its ${deadlineMs / 1000} s deadline (NATS or Postgres answered too slowly): nothing was enqueued by this request; enqueue again (a repeat with the same id is answered with the job if an earlier enqueue stored it)`,
  );
}

function maybeStored(job: DeadlineJob, cause?: unknown): JetfnError {
  return new JetfnError(
    "E_HANDLER_TIMEOUT",
    `keyed enqueue of ${job.fn}: JetStream did not confirm the publish of job ${job.id} in time; the job may or may not have been stored: \`jetfn status ${job.id}\` tells, and enqueuing again with id ${JSON.stringify(job.id)} is answered with the job if it was stored`,
    { cause },
  );
}
