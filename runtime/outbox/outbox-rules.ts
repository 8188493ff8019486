import { isValidFunctionName } from "../deploy/function-name";
import {
  DEBOUNCE_KEY_HEADER,
  DEBOUNCE_MAX_WAIT_HEADER,
  DEBOUNCE_PERIOD_HEADER,
  isValidJobKey,
  MAX_DEBOUNCE_MS,
  MAX_KEY_LENGTH,
  MIN_DEBOUNCE_MS,
  SINGLETON_KEY_HEADER,
} from "../flow/job-keys";
import { PRIORITY_HEADER } from "../flow/priority";
import { NOT_BEFORE_HEADER, NOT_BEFORE_PATTERN } from "../invocation/job-delay";
import { RESUME_HEADER } from "../invocation/resume-tag";
import { EVENT_PREFIX } from "../nats/event-stream";
import { ID_HEADER, isValidInvocationId, JOB_PREFIX } from "../nats/subjects";
import { isValidEventName } from "../sdk/define-event";
import type { OutboxMessage } from "./outbox-message";

/**
 * The rules an outbox row must meet before the relay publishes it with the runtime's NATS rights:
 * a job for a valid function name or an event for a valid event name, with only the headers jetfn
 * writes (a job's singleton or debounce key checked as the enqueue API checks it), the id jetfn gives it as `Nats-Msg-Id` (`<function>:<invocation id>` for a job), and a body the server accepts. Anyone who may insert into
 * `jetfn.outbox` (apps, handler code) would otherwise choose where the runtime publishes, a
 * JetStream API subject for example. The database checks the same rules
 * (`jetfn.outbox_row_problem`, schema/migrations/0001_jetfn_baseline.sql, 0025, 0028) except the body's
 * size, which only the connected server knows.
 */
export interface OutboxRules {
  /** Largest message the NATS server accepts, headers included (its `max_payload`). */
  maxPayload: number;
}

/** Room left for headers under `max_payload`, as for every other publish (see encodeInput). */
const HEADER_ROOM = 512;
/** Event ids are printable ASCII without spaces: they travel as the `Nats-Msg-Id` header. */
const EVENT_ID = /^[!-~]{1,128}$/;

/** Why `message` must not be published, or undefined when it meets every rule. */
export function outboxRowProblem(message: OutboxMessage, rules: OutboxRules): string | undefined {
  const problem = describeProblem(message);
  if (problem) return problem;
  const size = Buffer.byteLength(message.body);
  if (size > rules.maxPayload - HEADER_ROOM) {
    return `the body is ${size} bytes; the NATS server accepts at most ${rules.maxPayload} bytes per message`;
  }
  return undefined;
}

/** True for an id an event may carry (jobs' ids are invocation ids). */
export function isValidEventId(id: string): boolean {
  return EVENT_ID.test(id);
}

function describeProblem(message: OutboxMessage): string | undefined {
  const { id, subject, headers, body } = message;
  if (typeof id !== "string" || typeof subject !== "string" || typeof body !== "string" || !isRecord(headers)) {
    return "id, subject, headers and body are required";
  }
  const name = subject.startsWith(JOB_PREFIX) ? subject.slice(JOB_PREFIX.length) : undefined;
  if (name !== undefined && isValidFunctionName(name)) {
    // A job's row id is its Nats-Msg-Id, "<name>:<invocation id>" (see jobMessageId).
    if (!id.startsWith(`${name}:`)) return `a job's id must be "<function name>:<invocation id>"`;
    if (headers[RESUME_HEADER] !== undefined) return resumptionProblem(id.slice(name.length + 1), headers, body);
    const invocationId = id.slice(name.length + 1);
    if (!isValidInvocationId(invocationId)) return `a job's invocation id must be 8-128 letters, digits, "-" or "_"`;
    if (!hasOnlyJobHeaders(headers, invocationId)) return JOB_HEADERS_RULE;
    return keyHeadersProblem(headers as Record<string, string>);
  }
  if (subject.startsWith(EVENT_PREFIX) && isValidEventName(subject.slice(EVENT_PREFIX.length))) {
    if (!isValidEventId(id)) return "an event's id must be 1-128 printable ASCII characters, no spaces";
    if (Object.keys(headers).length > 0) return "an event has no headers";
    return undefined;
  }
  return "the subject must be fn.job.<function name> or fn.event.<event name>";
}

const JOB_HEADERS_RULE =
  "a job's headers are Jetfn-Id, equal to its invocation id, and optionally Jetfn-Not-Before, its due time in epoch milliseconds, Jetfn-Priority, 1 to 3, and a key: Jetfn-Singleton-Key, or Jetfn-Debounce-Key with Jetfn-Debounce-Period and optionally Jetfn-Debounce-Max-Wait";

/** Headers a job row may carry besides `Jetfn-Id`. */
const OPTIONAL_JOB_HEADERS = new Set([
  NOT_BEFORE_HEADER,
  PRIORITY_HEADER,
  SINGLETON_KEY_HEADER,
  DEBOUNCE_KEY_HEADER,
  DEBOUNCE_PERIOD_HEADER,
  DEBOUNCE_MAX_WAIT_HEADER,
]);
/** Milliseconds as a debounce period or maxWait travels: up to 8 digits (24 h is 86,400,000). */
const MILLISECONDS = /^[0-9]{1,8}$/;

/**
 * `{}`, or `{Jetfn-Id}` with, optionally, `Jetfn-Not-Before` (a delayed job, see job-delay.ts),
 * `Jetfn-Priority` (1-3, see flow/priority.ts) and the key headers, all of them strings.
 */
function hasOnlyJobHeaders(headers: Record<string, unknown>, id: string): boolean {
  const keys = Object.keys(headers);
  if (keys.length === 0) return true;
  if (headers[ID_HEADER] !== id) return false;
  const due = headers[NOT_BEFORE_HEADER];
  const priority = headers[PRIORITY_HEADER];
  return (
    keys.every((key) => key === ID_HEADER || (OPTIONAL_JOB_HEADERS.has(key) && typeof headers[key] === "string")) &&
    (due === undefined || NOT_BEFORE_PATTERN.test(due as string)) &&
    (priority === undefined || /^[1-3]$/.test(priority as string))
  );
}

/**
 * What is wrong with a job's singleton or debounce key headers (flow/job-keys.ts), as the enqueue API
 * would refuse it; undefined when they are fine or absent.
 */
function keyHeadersProblem(headers: Record<string, string>): string | undefined {
  const singleton = headers[SINGLETON_KEY_HEADER];
  const debounce = headers[DEBOUNCE_KEY_HEADER];
  const period = headers[DEBOUNCE_PERIOD_HEADER];
  const maxWait = headers[DEBOUNCE_MAX_WAIT_HEADER];
  if (singleton !== undefined && debounce !== undefined) return "a job has a singleton key or a debounce key, not both";
  if (debounce === undefined && (period !== undefined || maxWait !== undefined)) {
    return "Jetfn-Debounce-Period and Jetfn-Debounce-Max-Wait need Jetfn-Debounce-Key";
  }
  const key = singleton ?? debounce;
  if (key !== undefined && !isValidJobKey(key)) {
    return `a singleton or debounce key is 1-${MAX_KEY_LENGTH} letters, digits or _ - . : @ / + =`;
  }
  if (debounce === undefined) return undefined;
  if (headers[NOT_BEFORE_HEADER] !== undefined) return "a debounced job takes no Jetfn-Not-Before";
  const periodMs = period !== undefined && MILLISECONDS.test(period) ? Number(period) : Number.NaN;
  if (!(periodMs >= MIN_DEBOUNCE_MS && periodMs <= MAX_DEBOUNCE_MS)) {
    return `a debounced job needs Jetfn-Debounce-Period, ${MIN_DEBOUNCE_MS} to ${MAX_DEBOUNCE_MS} milliseconds`;
  }
  const maxWaitMs = maxWait !== undefined && MILLISECONDS.test(maxWait) ? Number(maxWait) : Number.NaN;
  if (maxWait !== undefined && !(maxWaitMs >= periodMs && maxWaitMs <= MAX_DEBOUNCE_MS)) {
    return `Jetfn-Debounce-Max-Wait is milliseconds, from the period to ${MAX_DEBOUNCE_MS}`;
  }
  return undefined;
}

/** What follows "<function>:" in a resumption's row id: `<invocation id>:<token>:<digest>` (see resume-tag.ts). */
const RESUMPTION_ID = /^([A-Za-z0-9_-]{8,128}):([0-9]{1,9}[a-z][0-9]{0,9}):([A-Za-z0-9_-]{22})$/;
const RESUME_VALUE = /^[0-9]{1,9}[a-z][0-9]{0,9}\.[A-Za-z0-9_-]{22}$/;
const RESUMPTION_RULE =
  'a resumption\'s id is "<function name>:<invocation id>:<token>:<digest>", its headers Jetfn-Id, equal to its invocation id, Jetfn-Resume, "<token>.<tag>" (the same token), and optionally Jetfn-Not-Before and Jetfn-Priority';

/**
 * A resumption row (a durable sleep's next run): what is wrong with it, as jetfn.resumption_row_problem
 * says. Its tag is checked where it runs: only the runtimes hold the secret.
 */
function resumptionProblem(rest: string, headers: Record<string, unknown>, body: string): string | undefined {
  const match = RESUMPTION_ID.exec(rest);
  if (!match) return RESUMPTION_RULE;
  const { [NOT_BEFORE_HEADER]: due, [PRIORITY_HEADER]: priority, ...required } = headers;
  const keys = Object.keys(required);
  const resume = required[RESUME_HEADER];
  if (
    keys.length !== 2 ||
    required[ID_HEADER] !== match[1] ||
    typeof resume !== "string" ||
    !RESUME_VALUE.test(resume) ||
    !resume.startsWith(`${match[2]}.`) ||
    (due !== undefined && (typeof due !== "string" || !NOT_BEFORE_PATTERN.test(due))) ||
    (priority !== undefined && (typeof priority !== "string" || !/^[1-3]$/.test(priority)))
  ) {
    return RESUMPTION_RULE;
  }
  if (body !== "") return "a resumption has an empty body";
  return undefined;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
