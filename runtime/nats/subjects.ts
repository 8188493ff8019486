/** Subject prefix of request-reply calls: `fn.call.<name>`. */
export const CALL_PREFIX = "fn.call.";
/** Subject prefix of fire-and-forget jobs: `fn.job.<name>`, captured by the jobs stream. */
export const JOB_PREFIX = "fn.job.";
/** Completion notices of jobs, `jetfn.done.<id>` (core NATS, for waiters). */
export const DONE_PREFIX = "jetfn.done.";
/** Status API answered by every runtime: request `{ "id": "..." }`. */
export const STATUS_SUBJECT = "jetfn.api.status";
/** Key-value bucket holding running jobs' progress. */
export const PROGRESS_BUCKET = "JETFN_PROGRESS";

/** Header carrying the invocation id (the job handle). */
export const ID_HEADER = "Jetfn-Id";
/** Header linking a retried job to the dead one it replaces. */
export const RETRY_OF_HEADER = "Jetfn-Retry-Of";
/** JetStream's de-duplication header. */
export const MSG_ID_HEADER = "Nats-Msg-Id";
/** Error headers of the NATS services convention. */
export const ERROR_CODE_HEADER = "Nats-Service-Error-Code";
export const ERROR_HEADER = "Nats-Service-Error";

/** `send-mail` -> `fn.call.send-mail`. */
export function callSubject(name: string): string {
  return CALL_PREFIX + name;
}

/** `send-mail` -> `fn.job.send-mail`. */
export function jobSubject(name: string): string {
  return JOB_PREFIX + name;
}

/**
 * The `Nats-Msg-Id` of job `id` of function `name`: `<name>:<id>`. JetStream drops a repeat of the
 * same function's job within the duplicate window, but not a job of another function that reuses
 * the id: that one is stored, and refused when it runs (E_ID_CONFLICT), instead of vanishing.
 */
export function jobMessageId(name: string, id: string): string {
  return `${name}:${id}`;
}

/** Completion notice subject of one invocation. */
export function doneSubject(id: string): string {
  return DONE_PREFIX + id;
}

/** Durable consumer name of a function's jobs: `billing.charge` -> `billing:charge` (names cannot hold dots). */
export function consumerName(name: string): string {
  return name.replaceAll(".", ":");
}

/** Invocation ids are safe to use as subject tokens and KV keys. */
export const INVOCATION_ID_PATTERN = /^[A-Za-z0-9_-]{8,128}$/;

/**
 * The shape of the ids the runtime derives itself: for a job published without `Jetfn-Id`, and for
 * each listener of an event (from the listener's name and the event's id, which may be known).
 */
const DERIVED_ID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/**
 * True for an id a publisher may not choose: one shaped like the ids the runtime derives. A job
 * carrying one could otherwise take the id of an event's run by a listener before that run, which
 * the invocation record would then fence out.
 */
export function isReservedInvocationId(id: string): boolean {
  return DERIVED_ID_PATTERN.test(id);
}

/** True when `id` can be used as an invocation id. */
export function isValidInvocationId(id: string): boolean {
  return INVOCATION_ID_PATTERN.test(id);
}
