import { isValidFunctionName } from "../deploy/function-name";
import { PRIORITY_HEADER } from "../flow/priority";
import { NOT_BEFORE_HEADER, NOT_BEFORE_PATTERN } from "../invocation/job-delay";
import { EVENT_PREFIX } from "../nats/event-stream";
import { ID_HEADER, isValidInvocationId, JOB_PREFIX } from "../nats/subjects";
import { isValidEventName } from "../sdk/define-event";
import type { OutboxMessage } from "./outbox-message";

/**
 * The rules an outbox row must meet before the relay publishes it with the runtime's NATS rights:
 * a job for a valid function name or an event for a valid event name, with only the headers jetfn
 * writes, the id jetfn gives it as `Nats-Msg-Id` (`<function>:<invocation id>` for a job), and a body the server accepts. Anyone who may insert into
 * `jetfn.outbox` (apps, handler code) would otherwise choose where the runtime publishes, a
 * JetStream API subject for example. The database checks the same rules
 * (`jetfn.outbox_row_problem`, schema/migrations/0001_jetfn_baseline.sql) except the body's
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
    const invocationId = id.slice(name.length + 1);
    if (!isValidInvocationId(invocationId)) return `a job's invocation id must be 8-128 letters, digits, "-" or "_"`;
    if (!hasOnlyJobHeaders(headers, invocationId)) {
      return "a job's headers are Jetfn-Id, equal to its invocation id, and optionally Jetfn-Not-Before, its due time in epoch milliseconds, and Jetfn-Priority, 1 to 3";
    }
    return undefined;
  }
  if (subject.startsWith(EVENT_PREFIX) && isValidEventName(subject.slice(EVENT_PREFIX.length))) {
    if (!isValidEventId(id)) return "an event's id must be 1-128 printable ASCII characters, no spaces";
    if (Object.keys(headers).length > 0) return "an event has no headers";
    return undefined;
  }
  return "the subject must be fn.job.<function name> or fn.event.<event name>";
}

/**
 * `{}`, or `{Jetfn-Id}` with, optionally, `Jetfn-Not-Before` (a delayed job, see job-delay.ts) and
 * `Jetfn-Priority` (1-3, see flow/priority.ts).
 */
function hasOnlyJobHeaders(headers: Record<string, unknown>, id: string): boolean {
  const keys = Object.keys(headers);
  if (keys.length === 0) return true;
  if (headers[ID_HEADER] !== id) return false;
  const due = headers[NOT_BEFORE_HEADER];
  const priority = headers[PRIORITY_HEADER];
  const optional = Number(due !== undefined) + Number(priority !== undefined);
  return (
    keys.length === 1 + optional &&
    (due === undefined || (typeof due === "string" && NOT_BEFORE_PATTERN.test(due))) &&
    (priority === undefined || (typeof priority === "string" && /^[1-3]$/.test(priority)))
  );
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
