import { randomUUID } from "node:crypto";
import type { PubAck } from "@nats-io/jetstream";
import { headers as natsHeaders } from "@nats-io/transport-node";
import type { KeyedEnqueue } from "../flow/enqueue-api";
import {
  DEBOUNCE_KEY_HEADER,
  DEBOUNCE_MAX_WAIT_HEADER,
  DEBOUNCE_PERIOD_HEADER,
  SINGLETON_KEY_HEADER,
} from "../flow/job-keys";
import { type FlowControlOptions, keyHeaders, readKeyHeaders } from "../flow/keyed-enqueue-request";
import { checkPriority, PRIORITY_HEADER } from "../flow/priority";
import { NOT_BEFORE_HEADER, parseNotBefore, routeJob } from "../invocation/job-delay";
import { RESUME_HEADER, resumeHeader, resumeMessageId, resumeRowId } from "../invocation/resume-tag";
import { eventSubject } from "../nats/event-stream";
import { checkJob, inputJson } from "../nats/publish-job";
import type { JetStreamPublisher } from "../nats/stream-publisher";
import { ID_HEADER, JOB_PREFIX, jobMessageId, jobSubject } from "../nats/subjects";
import { checkEmit, type EventDefinition } from "../sdk/define-event";
import { JetfnError } from "../support/errors";
import { isValidEventId } from "./outbox-rules";

/**
 * A message to publish once the transaction that asked for it commits: a job for a function
 * (`fn.job.<name>`) or an event (`fn.event.<name>`). `id` is its `Nats-Msg-Id` (for a job,
 * `<name>:<invocation id>`; the invocation id is in the `Jetfn-Id` header).
 */
export interface OutboxMessage {
  id: string;
  subject: string;
  headers: Record<string, string>;
  body: string;
}

/**
 * Builds the message for job `id` of `name` (see jobMessageId for its message id), with its flow
 * control: a priority, and a singleton or debounce key, which the relay enqueues through the key's
 * claim once the transaction committed (see `keyedJobOf`). E_INPUT_INVALID for a bad key, or a
 * debounced job given a due time.
 */
export function jobMessage(
  name: string,
  input: unknown,
  id: string = randomUUID(),
  maxPayload?: number,
  /** Due time (epoch ms) of a delayed job; the relay routes it to the delayed-jobs stream. */
  notBefore?: number,
  /** Priority 1-3 (the relay routes it to the function's priority subject, see flow/priority.ts) and keys. */
  flow: FlowControlOptions = {},
): OutboxMessage {
  checkJob(name, id);
  const headers: Record<string, string> = { [ID_HEADER]: id, ...keyHeaders({ ...flow, notBefore }) };
  if (notBefore !== undefined) headers[NOT_BEFORE_HEADER] = String(notBefore);
  if (flow.priority) headers[PRIORITY_HEADER] = String(checkPriority(flow.priority));
  return {
    id: jobMessageId(name, id),
    subject: jobSubject(name),
    headers,
    body: inputJson(input, name, maxPayload),
  };
}

/** What a resumption resumes (invocation/resume-tag.ts): whose, with which token, when and at which priority. */
export interface Resumption {
  /** The function's name. */
  fn: string;
  /** The invocation's id. */
  id: string;
  /** The run's token (`<seq>s`, `<seq>m`, ...), signed with the runtimes' secret. */
  token: string;
  /** When it is due (epoch ms). */
  notBefore: number;
  /** The job's priority. */
  priority: number | undefined;
}

/** The signed resumption that runs an invocation on after a sleep, a wait, a step's retry or a reopen. */
export function resumptionMessage(secret: string, resumption: Resumption): OutboxMessage {
  const { fn: name, id, token, notBefore, priority } = resumption;
  const resume = resumeHeader(secret, name, id, token);
  const headers: Record<string, string> = {
    [ID_HEADER]: id,
    [RESUME_HEADER]: resume,
    // Whole milliseconds, as the outbox rules want a due time.
    [NOT_BEFORE_HEADER]: String(Math.ceil(notBefore)),
  };
  if (priority) headers[PRIORITY_HEADER] = String(priority);
  return { id: resumeRowId(name, id, resume), subject: jobSubject(name), headers, body: "" };
}

/**
 * The keyed enqueue a job row asks for (a singleton or debounce key in its headers), or undefined
 * for any other row. The row met the outbox rules; what is still wrong throws E_INPUT_INVALID.
 */
export function keyedJobOf(message: OutboxMessage): KeyedEnqueue | undefined {
  const { headers } = message;
  if (!message.subject.startsWith(JOB_PREFIX) || !KEY_HEADERS.some((name) => headers[name] !== undefined)) {
    return undefined;
  }
  const fn = message.subject.slice(JOB_PREFIX.length);
  const id = headers[ID_HEADER];
  if (id === undefined) throw new JetfnError("E_INPUT_INVALID", `a keyed job for ${fn} needs its ${ID_HEADER}`);
  const notBefore = parseNotBefore(headers[NOT_BEFORE_HEADER]);
  const keys = readKeyHeaders((name) => headers[name], notBefore) ?? {};
  const priority = headers[PRIORITY_HEADER];
  return {
    fn,
    id,
    body: Buffer.from(message.body),
    priority: priority === undefined ? 0 : checkPriority(priority),
    notBefore,
    ...keys,
  };
}

const KEY_HEADERS = [SINGLETON_KEY_HEADER, DEBOUNCE_KEY_HEADER, DEBOUNCE_PERIOD_HEADER, DEBOUNCE_MAX_WAIT_HEADER];

/** Builds the message for an event, after checking its name and data (E_INPUT_INVALID otherwise). */
export function eventMessage(
  event: string | EventDefinition,
  data: unknown,
  id: string = randomUUID(),
  maxPayload?: number,
): OutboxMessage {
  const checked = checkEmit(event, data);
  if (!isValidEventId(id)) {
    throw new JetfnError(
      "E_INPUT_INVALID",
      `event id ${JSON.stringify(id)} must be 1-128 printable ASCII characters, no spaces`,
    );
  }
  return {
    id,
    subject: eventSubject(checked.name),
    headers: {},
    body: inputJson(checked.data, checked.name, maxPayload),
  };
}

/** Publishes one message and waits for JetStream to store it (a repeat of its id is dropped). */
export async function publishMessage(js: JetStreamPublisher, message: OutboxMessage): Promise<PubAck> {
  const route = message.subject.startsWith(JOB_PREFIX)
    ? routeJob(message.subject, message.subject.slice(JOB_PREFIX.length), message.headers)
    : message;
  const header = natsHeaders();
  for (const [key, value] of Object.entries(route.headers)) header.set(key, value);
  return js.publish(route.subject, message.body, { msgID: natsMessageId(message), headers: header });
}

/**
 * The `Nats-Msg-Id` a row is published with: its id, but for a resumption, whose row id (which apps
 * may read) is not its message id (which nobody but a runtime may know, see resume-tag.ts).
 */
function natsMessageId(message: OutboxMessage): string {
  const resume = message.headers[RESUME_HEADER];
  if (resume === undefined || !message.subject.startsWith(JOB_PREFIX)) return message.id;
  const id = message.headers[ID_HEADER] ?? "";
  return resumeMessageId(message.subject.slice(JOB_PREFIX.length), id, resume);
}
