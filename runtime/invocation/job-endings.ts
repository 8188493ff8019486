import type { JsMsg } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import type { Logger } from "pino";
import { FINAL_STATUSES } from "../../schema/jetfn";
import type { DatabaseClient } from "../db/client";
import {
  getInvocation,
  idConflictError,
  type JobRecord,
  otherOwner,
  recordFailure,
  type StoredError,
} from "../db/invocation-store";
import { isOlderVersion, TERM_REASON_VERSION } from "../nats/server-check";
import { doneSubject } from "../nats/subjects";
import { isoNow } from "../support/clock";
import { type JetfnError, originalErrorName } from "../support/errors";
import { failureFields } from "../support/logger";
import type { RuntimeEmitter } from "../triggers/events";
import { type OutageDependencies, whenDatabaseAnswers } from "./database-outage";

// How a job ends other than by its handler's success: refused before it ran, dead, cancelled, or
// found already finished; each recorded, terminated or acked, and announced.

/** What ending a job needs from the runtime. */
export interface JobEndingDependencies extends OutageDependencies {
  database: DatabaseClient;
  nc: NatsConnection;
  events: RuntimeEmitter;
  logger: Logger;
}

/** What a finished job announces on `jetfn.done.<id>`. */
export interface DoneNotice {
  id: string;
  fn: string;
  status: "succeeded" | "dead" | "cancelled";
  result?: unknown;
  error?: StoredError;
}

/** Longest a stack trace kept per attempt; enough to find the line, bounded so records stay small. */
const STACK_LIMIT = 2_000;
const MESSAGE_LIMIT = 2_000;

/**
 * Ends a job that cannot run at all (bad id, input that is not JSON, attempts used up) as dead,
 * and reports it like a failed invocation so stats and metrics count it.
 */
export function refuse(
  deps: JobEndingDependencies,
  record: JobRecord,
  message: JsMsg,
  error: JetfnError,
  log: Logger,
): Promise<void> {
  reportFinalFailure(deps, record, error, 0);
  return bury(deps, record, message, error, log);
}

/** Records a dead job with its error, then terminates the message so it is never delivered again. */
export async function bury(
  deps: JobEndingDependencies,
  record: JobRecord,
  message: JsMsg,
  error: JetfnError,
  log: Logger,
  durationMs?: number,
): Promise<void> {
  const stored = storedError(error, record.attempt);
  const applied = await whenDatabaseAnswers(deps, log, () => recordFailure(deps.database.sql, record, "dead", stored));
  terminate(deps, message, error);
  if (!applied) {
    const owner = await whenDatabaseAnswers(deps, log, () => otherOwner(deps.database.sql, record.id, record.fn));
    // Its id is another function's: that record stays as it is, and this job ends here, in the logs.
    if (owner !== undefined) logConflict(log, idConflictError(record.id, record.fn, owner), durationMs);
    return;
  }
  log.error(
    { outcome: "dead", durationMs, ...failureFields(error) },
    `Job is dead after attempt ${record.attempt}: ${error.message}`,
  );
  notifyDone(deps, { id: record.id, fn: record.fn, status: "dead", error: stored });
}

/**
 * Ends a cancelled job: records it `cancelled` with the reason (unless it already ended, or the
 * cancel already recorded it), terminates the message and announces the end. A job that had
 * already ended otherwise (succeeded or dead, or an id of another function's) keeps its record,
 * and no cancel is announced for it.
 */
export async function endCancelled(
  deps: JobEndingDependencies,
  record: JobRecord,
  message: JsMsg,
  error: JetfnError,
  log: Logger,
  durationMs?: number,
): Promise<void> {
  const stored = storedError(error, record.attempt);
  const applied = await whenDatabaseAnswers(deps, log, () =>
    recordFailure(deps.database.sql, record, "cancelled", stored),
  );
  message.term();
  if (!applied) {
    const existing = await whenDatabaseAnswers(deps, log, () => getInvocation(deps.database, record.id));
    if (existing?.status !== "cancelled" || existing.function !== record.fn) {
      log.info(
        { outcome: existing?.status, durationMs },
        "A cancel came for a job that had already ended; its record stands.",
      );
      return;
    }
  }
  log.info({ outcome: "cancelled", durationMs }, `Job cancelled: ${error.message}`);
  notifyDone(deps, { id: record.id, fn: record.fn, status: "cancelled", error: stored });
}

/**
 * Ends a job whose id belongs to another function's invocation: terminated, reported as a failed
 * invocation, and never recorded (the record under that id is the other function's) nor announced
 * as done (its waiters would read the other function's result).
 */
export function refuseConflict(
  deps: JobEndingDependencies,
  record: JobRecord,
  message: JsMsg,
  error: JetfnError,
  log: Logger,
  durationMs = 0,
): void {
  reportFinalFailure(deps, record, error, durationMs);
  terminate(deps, message, error);
  logConflict(log, error, durationMs);
}

function logConflict(log: Logger, error: JetfnError, durationMs: number | undefined): void {
  log.error({ outcome: "refused", durationMs, ...failureFields(error) }, `Job refused: ${error.message}`);
}

/** On a redelivery, acks (or terms) a job whose outcome is already recorded instead of running it again. */
export async function finishedBefore(
  deps: JobEndingDependencies,
  record: JobRecord,
  message: JsMsg,
  log: Logger,
): Promise<boolean> {
  const existing = await getInvocation(deps.database, record.id);
  if (!existing) return false;
  if (existing.function !== record.fn) {
    refuseConflict(deps, record, message, idConflictError(record.id, record.fn, existing.function), log);
    return true;
  }
  if (existing.status === "succeeded") {
    message.ack();
    log.info("Job already succeeded; acknowledged without running it again.");
    return true;
  }
  if (FINAL_STATUSES.has(existing.status)) {
    message.term();
    log.info({ status: existing.status }, "Job already ended; not running it again.");
    return true;
  }
  // It slept since: only the run its record names goes on with it (its resumption's), not a copy of its message.
  if (existing.resume !== null && existing.resume !== (record.resume ?? null)) {
    message.ack();
    log.info({ status: existing.status }, "The job went on in another run; this copy of its message is not run.");
    return true;
  }
  return false;
}

/** Reports a job that ended without success like a failed invocation, so stats and metrics count it. */
function reportFinalFailure(
  deps: JobEndingDependencies,
  record: JobRecord,
  error: JetfnError,
  durationMs: number,
): void {
  deps.events.emit("invocation:failure", {
    fn: record.fn,
    invocationId: record.id,
    attempt: record.attempt,
    kind: "job",
    durationMs,
    error,
    final: true,
  });
}

/** Terminates the message so it is never delivered again, with the reason where the server keeps one. */
function terminate(deps: JobEndingDependencies, message: JsMsg, error: JetfnError): void {
  // Servers before 2.10.4 ignore a +TERM that carries a reason, and deliver the job once more.
  if (isOlderVersion(deps.nc.info?.version ?? "0", TERM_REASON_VERSION)) message.term();
  else message.term(error.message.slice(0, 200));
}

/** Announces a job's end: the runtime's own event, and the done notice its waiters listen for. */
export function notifyDone(deps: JobEndingDependencies, notice: DoneNotice): void {
  deps.events.emit("job:done", { fn: notice.fn, invocationId: notice.id, status: notice.status });
  try {
    deps.nc.publish(doneSubject(notice.id), JSON.stringify(notice));
  } catch (error) {
    deps.logger.debug({ err: error, invocationId: notice.id }, "Could not announce the job's end.");
  }
}

/** An error as stored per attempt: class, code, message and a bounded stack. */
export function storedError(error: JetfnError, attempt: number): StoredError {
  const stored: StoredError = {
    attempt,
    code: error.code,
    name: originalErrorName(error),
    message: error.message.slice(0, MESSAGE_LIMIT),
    at: isoNow(),
  };
  const stack = (error.cause as { stack?: unknown } | undefined)?.stack ?? error.stack;
  if (typeof stack === "string") stored.stack = stack.slice(0, STACK_LIMIT);
  if (error.issues) stored.issues = error.issues;
  return stored;
}
