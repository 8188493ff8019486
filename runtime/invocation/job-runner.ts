import { setTimeout as sleep } from "node:timers/promises";
import type { JetStreamClient, JsMsg } from "@nats-io/jetstream";
import type { Logger } from "pino";
import type { DatabaseBinder } from "../db/app-database";
import { isConnectionError } from "../db/client";
import type { CommitGroups } from "../db/commit-groups";
import {
  completionStatement,
  idConflictError,
  type JobRecord,
  otherOwner,
  recordFailure,
  type SuccessRecorder,
} from "../db/invocation-store";
import type { FlowControl } from "../flow/flow-control";
import { flowLabelsOf } from "../flow/flow-labels";
import { headerValue } from "../nats/header-value";
import type { ProgressBoard } from "../nats/progress-board";
import type { OutboxRelay } from "../outbox/outbox-relay";
import type { ResolvedFunction } from "../sdk/define-function";
import { isoNow } from "../support/clock";
import { formatDuration } from "../support/duration";
import { isRetryable } from "../support/error-codes";
import { JetfnError } from "../support/errors";
import type { LogLimits } from "../support/log-budget";
import { failureFields, invocationLogger } from "../support/logger";
import type { WaitToCatchUp } from "../triggers/event-waiters";
import type { Cancellations } from "./cancellation";
import { whenDatabaseAnswers } from "./database-outage";
import { type InvokeDependencies, invoke } from "./invoke";
import {
  bury,
  type DoneNotice,
  endCancelled,
  finishedBefore,
  type JobEndingDependencies,
  notifyDone,
  refuse,
  refuseConflict,
  storedError,
} from "./job-endings";
import { type JobIdentity, jobIdentity } from "./job-identity";
import type { Limiter } from "./limiter";
import { RESUME_HEADER } from "./resume-tag";
import { resumedRun } from "./resumption";
import { backoffDelay } from "./retry-policy";
import { parseInputBody } from "./validation";

/** Everything a job needs from the runtime. */
export interface JobRunnerDependencies extends JobEndingDependencies {
  successes: SuccessRecorder;
  /** Jobs' writes share transactions and COMMITs (each job in its own savepoint). */
  commitGroups?: CommitGroups;
  js: JetStreamClient;
  progress: ProgressBoard;
  /** Publishes the jobs and events an invocation committed to the outbox. */
  outbox: OutboxRelay;
  /** What a handler may log per invocation. @default DEFAULT_LOG_LIMITS */
  logLimits?: LogLimits;
  /** Cancel marks: a cancelled job ends `cancelled` instead of running (or is aborted while it runs). */
  cancellations?: Cancellations;
  /** Makes each invocation's `ctx.db` (with the app's schema). @default bindPlainDatabase */
  bindDatabase?: DatabaseBinder;
  /** Concurrency and rate limits across runtimes (for functions that declare them). */
  flow?: FlowControl;
  /** The runtimes' secret, which signs and checks durable sleeps' resumptions (resume-tag.ts). */
  resumeSecret?: string;
  /** Matches stored events with durable waits: a wait just recorded reads those stored before it. */
  eventWaiters?: { catchUpWait(wait: WaitToCatchUp): Promise<number> };
}

/** How the next try of an attempt runs. */
interface Tries {
  /** In a transaction of its own, after a shared COMMIT failed. */
  alone: boolean;
  /** Runs of this delivery that lost their database connection. */
  databaseLosses: number;
}

/**
 * Runs of one delivery that may lose their database connection and run again without spending an
 * attempt. An outage costs one such run per job (it waits for the database to answer first); only
 * a job whose connection dies again and again while the database answers reaches the limit.
 */
const MAX_DATABASE_RERUNS = 10;
/** First and longest wait before asking flow control again after it did not answer. */
const FLOW_RETRY_MS = 100;
const FLOW_RETRY_MAX_MS = 3_000;

/**
 * Runs one job message to its end: skips jobs another attempt already finished, runs the handler,
 * records the outcome in Postgres, and only then acks, naks with backoff, or terminates. While the
 * database is away the message is held (and kept alive) until it answers again, so an outage
 * neither loses the job nor burns its attempts.
 */
export async function runJob(
  deps: JobRunnerDependencies,
  fn: ResolvedFunction,
  limiter: Limiter,
  message: JsMsg,
  /** Who the message is: a job's own id, or (for an event delivered to a listener) an id per listener. */
  identify: (message: JsMsg) => JobIdentity = jobIdentity,
  /** Called once the handler has finished, before the outcome is recorded (frees a pull slot), with how long it held its slot. */
  onHandlerDone: (handlerMs: number) => void = () => {},
): Promise<void> {
  // A job woken from the waiting stream keeps its id, enqueue time and the attempts it had spent.
  // Read for any function: one redeployed without its limits still runs its woken jobs as they were.
  const woken = deps.flow?.woken(message, fn.name);
  // A durable sleep's resumption: the run goes on with what the invocation's record holds.
  const resume = headerValue(message.headers, RESUME_HEADER);
  let record: JobRecord;
  let log: Logger;
  let input: unknown;
  if (resume === undefined) {
    const identity = woken
      ? {
          ...identify(message),
          id: woken.id,
          invalidId: undefined,
          enqueuedAt: new Date(woken.enqueuedAt).toISOString(),
        }
      : identify(message);
    const attempt = message.info.deliveryCount + (woken?.attemptsBefore ?? 0);
    record = {
      id: identity.id,
      fn: fn.name,
      attempt,
      input: null,
      enqueuedAt: identity.enqueuedAt,
      startedAt: isoNow(),
      streamSeq: identity.streamSeq,
      retryOf: identity.retryOf,
      labels: flowLabelsOf(message.subject, message.headers),
    };
    log = invocationLogger(deps.logger, fn.name, identity.id, attempt);
    const checked = runnableInput(deps, fn, identity.invalidId, record, message, log);
    // Most jobs are runnable at once: only a job ended here, or a later attempt, waits for anything.
    const runnable = checked instanceof Promise ? await checked : checked;
    if (!runnable) {
      // Woken with a lease kept for it: the next waiting job gets that lease now, not when its keeping runs out.
      if (woken) await deps.flow?.forgo(fn, record, message);
      return;
    }
    input = runnable.input;
  } else {
    const resumed = await resumedRun(deps, fn, message, resume, woken?.attemptsBefore);
    if (!resumed) {
      if (woken) {
        await deps.flow?.forgo(
          fn,
          { id: woken.id, attempt: message.info.deliveryCount, enqueuedAt: isoNow() },
          message,
        );
      }
      return;
    }
    ({ record, log } = resumed);
    input = record.input;
  }
  // A free slot is taken at once, without a promise to await (most jobs find one).
  let releaseSlot: () => void;
  const free = deps.shutdownSignal.aborted ? undefined : limiter.tryAcquire?.();
  if (free) releaseSlot = free;
  else {
    try {
      releaseSlot = await limiter.acquire(deps.shutdownSignal);
    } catch {
      return handBack(message, woken !== undefined); // Shutting down before it started.
    }
  }
  let leave: (() => void) | undefined;
  if (fn.flow && deps.flow) {
    try {
      leave = await admitWhenFlowAnswers(deps, deps.flow, fn, input, record, message, log);
    } catch (error) {
      if ((error as JetfnError).code !== "E_FLOW_KEY_INVALID") return handBack(message, woken !== undefined); // Shutting down.
      // The key function failed: the attempt fails before the handler runs, as if the handler had thrown.
      return failAttempt(deps, fn, message, record, error as JetfnError, log, 0);
    } finally {
      if (!leave) releaseSlot();
    }
    if (!leave) return; // Over a limit: parked in the waiting stream, it comes back when a slot frees.
  } else if (woken) {
    // Its function lost its limits since it was woken: the lease kept for it is not taken.
    void deps.flow?.forgo(fn, record, message);
  }
  // The concurrency slot is for running handlers: free it as soon as the handler is done, while
  // the outcome is being recorded or committed with others.
  let slotFree = false;
  let slotAt = performance.now();
  const handlerDone = (): void => {
    if (slotFree) return;
    slotFree = true;
    releaseSlot();
    onHandlerDone(performance.now() - slotAt);
  };
  const tries: Tries = { alone: false, databaseLosses: 0 };
  try {
    while (!(await attemptJob(deps, fn, message, record, input, log, handlerDone, tries))) {
      await whenDatabaseAnswers(deps, log, () => deps.database.sql`select 1`);
      if (slotFree) {
        // Its slot went while its group committed; running the handler again needs one.
        try {
          releaseSlot = await limiter.acquire(deps.shutdownSignal);
        } catch {
          return; // Shutting down: JetStream delivers it again later.
        }
        slotFree = false;
        slotAt = performance.now();
      }
    }
  } finally {
    handlerDone();
    leave?.();
  }
}

/**
 * The job's input, to run with; or, for a job that must not run, undefined once it was ended:
 * cancelled, finished by an earlier attempt, or refused (an invalid id, input that is not JSON,
 * attempts used up). Answered at once when nothing is to be waited for (a first attempt to run).
 */
function runnableInput(
  deps: JobRunnerDependencies,
  fn: ResolvedFunction,
  invalidId: string | undefined,
  record: JobRecord,
  message: JsMsg,
  log: Logger,
): Runnable | Promise<Runnable> {
  const cancelled = deps.cancellations?.cancelled(record.id);
  if (cancelled) return endCancelled(deps, record, message, cancelled, log).then(notRunnable);
  if (record.attempt > 1) {
    return whenDatabaseAnswers(deps, log, () => finishedBefore(deps, record, message, log)).then((finished) =>
      finished ? undefined : checkedInput(deps, fn, invalidId, record, message, log),
    );
  }
  return checkedInput(deps, fn, invalidId, record, message, log);
}

/** What runnableInput answers: the input, or undefined for a job that was ended instead. */
type Runnable = { input: unknown } | undefined;

const notRunnable = (): Runnable => undefined;

/** The input of a job that was not ended before: refused when its id, body or attempt count says so. */
function checkedInput(
  deps: JobRunnerDependencies,
  fn: ResolvedFunction,
  invalidId: string | undefined,
  record: JobRecord,
  message: JsMsg,
  log: Logger,
): Runnable | Promise<Runnable> {
  if (invalidId !== undefined) {
    const error = new JetfnError(
      "E_INPUT_INVALID",
      `header Jetfn-Id "${invalidId}" is not a valid invocation id (8-128 letters, digits, "-" or "_", not shaped like the ids the runtime derives itself)`,
    );
    return refuse(deps, record, message, error, log).then(notRunnable);
  }
  let input: unknown;
  try {
    input = parseInputBody(message.data, fn.name);
  } catch (error) {
    return refuse(deps, record, message, error as JetfnError, log).then(notRunnable);
  }
  record.input = input ?? null;
  if (record.attempt > fn.retry.attempts) {
    const error = new JetfnError(
      "E_ATTEMPTS_EXHAUSTED",
      `all ${fn.retry.attempts} attempts were used, and the last one never reported back (the runtime stopped or lost the job's lease)`,
    );
    return refuse(deps, record, message, error, log).then(notRunnable);
  }
  return { input };
}

/**
 * One attempt. Returns false when the database went away during it: nothing was committed by this
 * attempt (or, if COMMIT landed, the fence refuses the repeat), so the caller tries again.
 */
async function attemptJob(
  deps: JobRunnerDependencies,
  fn: ResolvedFunction,
  message: JsMsg,
  record: JobRecord,
  input: unknown,
  log: Logger,
  handlerDone: () => void,
  tries: Tries,
): Promise<boolean> {
  record.startedAt = isoNow();
  const board = deps.progress.begin(record.id, fn.name, record.attempt, {
    enqueuedAt: record.enqueuedAt,
    input: record.input,
    labels: record.labels,
  });
  const outcome = await invoke(invokeDependencies(deps, !tries.alone && fn.sharedCommit), {
    fn,
    invocationId: record.id,
    attempt: record.attempt,
    kind: "job",
    input,
    shutdownSignal: deps.shutdownSignal,
    finalStatement: (resultJson) => completionStatement(record, resultJson),
    jobRecord: record,
    onProgress: (done, total) => board.update(done, total),
    log,
    // With concurrency 1 the next job waits for the COMMIT too, so it sees this one's writes.
    handlerDone: fn.concurrency > 1 ? handlerDone : undefined,
    cancellations: deps.cancellations,
  });
  board.finish();
  // Running again after a lost database or a failed shared COMMIT runs the handler again, so only
  // a final outcome frees the slot.
  if (outcome.ok || (outcome.kind !== "database" && outcome.kind !== "shared-commit")) handlerDone();
  const durationMs = Math.round(outcome.durationMs * 100) / 100;
  if (outcome.ok) {
    const done: DoneNotice = { id: record.id, fn: fn.name, status: "succeeded", result: outcome.result };
    let applied = outcome.committed;
    if (applied) {
      message.ack();
      // The jobs and events it asked for go out before anyone hears it is done. Without any, the
      // notice follows the ack in the same turn, so both leave in one socket write.
      if (outcome.outbox.length > 0) await deps.outbox.publishCommitted(outcome.outbox, log);
      notifyDone(deps, done);
    } else {
      // Nothing was committed (no writes, no outbox): the record is written with others in a batch.
      const settled = (won: boolean): void => {
        message.ack();
        if (won) notifyDone(deps, done);
      };
      try {
        try {
          applied = await deps.successes.record(record, outcome.resultJson, settled);
        } catch (error) {
          if (!isConnectionError(error)) throw error;
          applied = await whenDatabaseAnswers(deps, log, () =>
            deps.successes.record(record, outcome.resultJson, settled),
          );
        }
      } catch (error) {
        if ((error as { code?: unknown }).code !== "E_ID_CONFLICT") throw error;
        refuseConflict(deps, record, message, error as JetfnError, log, durationMs);
        return true;
      }
    }
    if (applied) log.info({ outcome: "succeeded", durationMs }, "Job succeeded.");
    else log.warn({ durationMs }, "Another attempt finished this job first; this attempt's result was discarded.");
    return true;
  }
  let { error } = outcome;
  if (outcome.kind === "suspended") {
    // Its invocation sleeps (the next run is due then), or another run went on from here: this message is done with.
    message.ack();
    const { suspension } = outcome;
    if (suspension?.retry !== undefined) {
      // The step logged its failure; its next attempt is a resumption's.
      const retryAt = new Date(suspension.wakeAt).toISOString();
      log.info(
        { outcome: "retrying-step", durationMs, step: suspension.retry.step, retryAt },
        "Job waits to run its step again.",
      );
    } else if (suspension?.wait !== undefined) {
      const until = new Date(suspension.wakeAt).toISOString();
      log.info(
        { outcome: "awaiting", durationMs, step: suspension.wait.step, event: suspension.wait.event, until },
        "Job waits for an event.",
      );
    } else if (suspension?.wakeAt !== undefined) {
      log.info({ outcome: "sleeping", durationMs, wakeAt: new Date(suspension.wakeAt).toISOString() }, "Job sleeps.");
    } else {
      log.info({ durationMs }, "Another run of this job went on from its last step; this one stopped.");
    }
    return true;
  }
  // A shared transaction doomed by a member's fence (the same job delivered twice into one group)
  // rolled back every member, the one the fence let through as well: that is a shared-commit
  // failure, not a fenced one (see failureKind in invoke.ts). Judged as fenced out, both copies
  // would be acked and the job lost; alone, one of them commits.
  if (outcome.kind === "shared-commit") {
    // Not this job's doing (or not only): it runs again at once, in a transaction of its own.
    tries.alone = true;
    log.warn({ durationMs, err: error.cause }, "The shared transaction did not commit; running the job again alone.");
    return false;
  }
  if (error.code === "E_ID_CONFLICT") {
    refuseConflict(deps, record, message, error, log, durationMs);
    return true;
  }
  if (error.code === "E_CANCELLED") {
    await endCancelled(deps, record, message, error, log, durationMs);
    return true;
  }
  if (outcome.kind === "fenced") {
    message.ack();
    log.warn({ durationMs }, "Another attempt finished this job first; this attempt rolled back its writes.");
    return true;
  }
  if (error.code === "E_SHUTTING_DOWN") {
    // Not the job's fault: it runs again on the next delivery, after the ack wait.
    log.warn({ durationMs }, "Job aborted by shutdown; it will be delivered again.");
    return true;
  }
  if (outcome.kind === "database") {
    if (++tries.databaseLosses <= MAX_DATABASE_RERUNS) {
      log.warn(
        { durationMs, err: error.cause },
        "The database went away during the job; trying again once it answers.",
      );
      return false;
    }
    // The database keeps answering others while this job's own connection dies on every run (its
    // handler may end its own session): the attempt counts, or it would run, and doom the shared
    // transactions it joins, forever.
    error = new JetfnError(
      "E_DATABASE_UNAVAILABLE",
      `the job lost its database connection on ${tries.databaseLosses} runs in a row: ${error.message}`,
      { cause: error },
    );
  }
  await failAttempt(deps, fn, message, record, error, log, outcome.durationMs);
  return true;
}

/**
 * Ends a failed attempt: with attempts left and a retryable error, records it `failed` and naks
 * the message with the backoff; otherwise records the job dead.
 */
async function failAttempt(
  deps: JobRunnerDependencies,
  fn: ResolvedFunction,
  message: JsMsg,
  record: JobRecord,
  error: JetfnError,
  log: Logger,
  elapsedMs: number,
): Promise<void> {
  const event = { fn: fn.name, invocationId: record.id, attempt: record.attempt, kind: "job" as const };
  const durationMs = Math.round(elapsedMs * 100) / 100;
  const final = !isRetryable(error.code) || record.attempt >= fn.retry.attempts;
  deps.events.emit("invocation:failure", { ...event, durationMs: elapsedMs, error, final });
  if (final) {
    await bury(deps, record, message, error, log, durationMs);
    return;
  }
  const delayMs =
    error.code === "E_RETRY_LATER" && typeof (error as { delayMs?: unknown }).delayMs === "number"
      ? (error as unknown as { delayMs: number }).delayMs
      : backoffDelay(fn.retry, record.attempt);
  const stored = storedError(error, record.attempt);
  const recorded = await whenDatabaseAnswers(deps, log, () =>
    recordFailure(deps.database.sql, record, "failed", stored),
  );
  const owner = recorded
    ? undefined
    : await whenDatabaseAnswers(deps, log, () => otherOwner(deps.database.sql, record.id, record.fn));
  if (owner !== undefined) {
    refuseConflict(deps, record, message, idConflictError(record.id, record.fn, owner), log, durationMs);
    return;
  }
  if (!recorded) {
    // The job ended meanwhile, or another run owns it (it slept, and its resumption goes on): this
    // attempt's failure does not count, and running it again would change nothing.
    message.ack();
    log.info(
      { durationMs, ...failureFields(error) },
      "The job ended or moved on meanwhile; this attempt's failure is not recorded.",
    );
    return;
  }
  message.nak(delayMs);
  log.warn(
    { outcome: "failed", durationMs, retryInMs: delayMs, ...failureFields(error) },
    `Job attempt ${record.attempt} of ${fn.retry.attempts} failed (${error.message}); retrying in ${formatDuration(delayMs)}.`,
  );
}

/**
 * A job this runtime gives up before it started, as it shuts down. JetStream delivers it again after
 * the ack wait; a woken job at once, to another runtime: a lease is kept for it, and the jobs
 * waiting behind it would wait out the ack wait too (or the keeping's 15 s).
 */
function handBack(message: JsMsg, woken: boolean): void {
  if (woken) message.nak();
}

/**
 * Passes the job through flow control, and while NATS does not answer (a timeout, a leader
 * election of JETFN_FLOW, flow control that could not open) tries again with back-off, keeping the
 * message held meanwhile: an unanswered gate neither spends an attempt nor lets the job run
 * unlimited. A key function that fails, and shutdown, end the wait (rejecting).
 */
async function admitWhenFlowAnswers(
  deps: JobRunnerDependencies,
  flow: FlowControl,
  fn: ResolvedFunction,
  input: unknown,
  record: JobRecord,
  message: JsMsg,
  log: Logger,
): Promise<(() => void) | undefined> {
  for (let tries = 0; ; tries++) {
    try {
      return await flow.admit(fn, input, record, message);
    } catch (error) {
      const code = (error as { code?: unknown }).code;
      if (code === "E_FLOW_KEY_INVALID" || code === "E_SHUTTING_DOWN" || deps.shutdownSignal.aborted) throw error;
      if (tries === 0 || tries % 20 === 0) {
        log.warn({ err: error, tries: tries + 1 }, "Flow control did not answer; holding the job and trying again.");
      }
      message.working();
      await sleep(Math.min(FLOW_RETRY_MAX_MS, FLOW_RETRY_MS * 2 ** tries), undefined, {
        signal: deps.shutdownSignal,
      });
    }
  }
}

// What invoke() needs, made once per runtime (with and without commit groups), not once per job.
const invokeDependenciesOf = new WeakMap<
  JobRunnerDependencies,
  { grouped: InvokeDependencies; alone: InvokeDependencies }
>();

function invokeDependencies(deps: JobRunnerDependencies, grouped: boolean): InvokeDependencies {
  let both = invokeDependenciesOf.get(deps);
  if (!both) {
    const make = (commitGroups: CommitGroups | undefined): InvokeDependencies => ({
      sql: deps.database.sql,
      logger: deps.logger,
      events: deps.events,
      // Read per invocation: a reconnect may reach a server with another limit.
      get maxPayload() {
        return deps.nc.info?.max_payload;
      },
      commitGroups,
      logLimits: deps.logLimits,
      bindDatabase: deps.bindDatabase,
      publishCommitted: (messages, log) => deps.outbox.publishCommitted(messages, log),
      resumeSecret: deps.resumeSecret,
      eventWaiters: deps.eventWaiters,
    });
    both = { alone: make(undefined), grouped: make(deps.commitGroups) };
    invokeDependenciesOf.set(deps, both);
  }
  return grouped ? both.grouped : both.alone;
}
