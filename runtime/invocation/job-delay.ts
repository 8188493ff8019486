import { PRIORITY_HEADER, routePriority } from "../flow/priority";
import { type Duration, parseDuration } from "../support/duration";
import { JetfnError } from "../support/errors";

/**
 * Delayed jobs. A job given a due time is not published to `fn.job.<name>` (where a runtime would
 * pull it at once and hold a lease, and a consumer slot, while it waits) but to its own subject in
 * the delayed-jobs stream, `jetfn.delayed.<id>`, with its due time and function in headers. One
 * durable consumer shared by every runtime moves it to `fn.job.<name>` when it is due (see
 * nats/delayed-jobs.ts). This works on servers without message schedules (nats-server 2.9), costs
 * the default path nothing, and leaves a function's attempts and consumer limits untouched.
 */

/** Header carrying a delayed job's due time, in milliseconds since the epoch (decimal digits). */
export const NOT_BEFORE_HEADER = "Jetfn-Not-Before";
/** Header naming a delayed job's function (the subject holds the id, to look the job up by id). */
export const FUNCTION_HEADER = "Jetfn-Function";
/** Subject prefix of waiting delayed jobs: `jetfn.delayed.<invocation id>`. */
export const DELAYED_PREFIX = "jetfn.delayed.";
/** Digits of a due time as it travels in the header (13 digits reach the year 2286). */
export const NOT_BEFORE_PATTERN = /^[0-9]{1,15}$/;

/** When a job should run: after a delay, or at a time. */
export interface DelayOptions {
  /** Run no sooner than this long from now (`"10m"`, `"1h"`, milliseconds). */
  delay?: Duration;
  /** Run no sooner than this time. */
  runAt?: Date | string;
}

/** The due time (epoch ms) `options` ask for, or undefined to run at once. Throws E_INPUT_INVALID on nonsense. */
export function dueTime(options: DelayOptions, now: number = Date.now()): number | undefined {
  if (options.delay !== undefined && options.runAt !== undefined) {
    throw new JetfnError("E_INPUT_INVALID", "give either delay or runAt, not both");
  }
  if (options.delay !== undefined) {
    let ms: number;
    try {
      ms = parseDuration(options.delay);
    } catch (error) {
      throw new JetfnError("E_INPUT_INVALID", `delay: ${(error as Error).message}`);
    }
    return ms > 0 ? now + ms : undefined;
  }
  if (options.runAt !== undefined) {
    const at = options.runAt instanceof Date ? options.runAt.getTime() : Date.parse(options.runAt);
    if (!Number.isFinite(at) || at < 0) {
      throw new JetfnError("E_INPUT_INVALID", `runAt ${JSON.stringify(options.runAt)} is not a valid date`);
    }
    return at > now ? at : undefined;
  }
  return undefined;
}

/** `job-0001` -> `jetfn.delayed.job-0001`. */
export function delayedSubject(id: string): string {
  return DELAYED_PREFIX + id;
}

/** Reads a due-time header; undefined when absent or malformed. */
export function parseNotBefore(value: string | undefined): number | undefined {
  if (value === undefined || !NOT_BEFORE_PATTERN.test(value)) return undefined;
  return Number(value);
}

/** Where and how a job message travels: the subject and headers it is published with. */
export interface JobRoute {
  subject: string;
  headers: Record<string, string>;
}

/**
 * Where a job for `name` with `headers` (its `Jetfn-Id`, a due time if delayed, a priority) is
 * published: to the delayed-jobs stream while its due time is ahead, else to `fn.job.<name>` (or
 * its priority subject) without the due-time and priority headers (the job runs as any other).
 */
export function routeJob(
  jobSubject: string,
  name: string,
  headers: Record<string, string>,
  now = Date.now(),
): JobRoute {
  if (headers[NOT_BEFORE_HEADER] === undefined && headers[PRIORITY_HEADER] === undefined) {
    return { subject: jobSubject, headers };
  }
  const due = parseNotBefore(headers[NOT_BEFORE_HEADER]);
  const id = headers[ID_HEADER_NAME];
  const { [NOT_BEFORE_HEADER]: _due, [PRIORITY_HEADER]: priority, ...rest } = headers;
  if (due === undefined || due <= now || id === undefined) {
    // A priority travels as the subject (see flow/priority.ts), not as a header.
    return { subject: priority === undefined ? jobSubject : routePriority(name, priority), headers: rest };
  }
  // Kept while it waits: the delayed-jobs mover publishes it to the priority subject when due.
  const kept = priority === undefined ? rest : { ...rest, [PRIORITY_HEADER]: priority };
  return {
    subject: delayedSubject(id),
    headers: { ...kept, [FUNCTION_HEADER]: name, [NOT_BEFORE_HEADER]: String(due) },
  };
}

// The same header as nats/subjects.ts ID_HEADER; repeated to keep this module free of NATS imports.
const ID_HEADER_NAME = "Jetfn-Id";
