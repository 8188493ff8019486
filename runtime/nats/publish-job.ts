import { randomUUID } from "node:crypto";
import type { PubAck } from "@nats-io/jetstream";
import { headers } from "@nats-io/transport-node";
import { describeInvalidName, isValidFunctionName } from "../deploy/function-name";
import { checkPriority, PRIORITY_HEADER } from "../flow/priority";
import { NOT_BEFORE_HEADER, routeJob } from "../invocation/job-delay";
import { JetfnError } from "../support/errors";
import type { JetStreamPublisher } from "./stream-publisher";
import {
  ID_HEADER,
  isReservedInvocationId,
  isValidInvocationId,
  jobMessageId,
  jobSubject,
  RETRY_OF_HEADER,
} from "./subjects";

/** Options of one job publish. */
export interface PublishJobOptions {
  /** Invocation id; random (unguessable) when omitted. A repeat for the same function is dropped (see jobMessageId). */
  id?: string;
  /** Id of the dead job this one retries. */
  retryOf?: string;
  /** The server's max payload, to refuse oversized input with a clear error. */
  maxPayload?: number;
  /** Due time (epoch ms): until then the job waits in the delayed-jobs stream (see job-delay.ts). */
  notBefore?: number;
  /** Priority 1-3 goes to the function's priority subject (see flow/priority.ts); 0 is the default. */
  priority?: number;
  /** More headers the job carries (a debounce key). */
  headers?: Record<string, string>;
  /**
   * Called when JetStream answers that it already holds a message of this id (a duplicate within
   * its window), with where that message is; may throw to refuse the publish's outcome.
   */
  onDuplicate?: (stored: { stream: string; seq: number }) => Promise<void>;
}

/** A stored job: its id and where JetStream put it. */
export interface PublishedJob {
  id: string;
  seq: number;
  duplicate: boolean;
}

/** Publishes a job for `name` and waits for JetStream to store it. */
export async function publishJob(
  js: JetStreamPublisher,
  name: string,
  input: unknown,
  options: PublishJobOptions = {},
): Promise<PublishedJob> {
  const id = options.id ?? randomUUID();
  checkJob(name, id);
  return publishEncodedJob(js, name, encodeInput(input, name, options.maxPayload), { ...options, id });
}

/**
 * Publishes a job whose input is already JSON (a keyed outbox row's body, kept byte for byte) and
 * waits for JetStream to store it; checked as `publishJob` checks it.
 */
export async function publishEncodedJob(
  js: JetStreamPublisher,
  name: string,
  body: Uint8Array,
  options: PublishJobOptions & { id: string },
): Promise<PublishedJob> {
  const { id } = options;
  checkJob(name, id);
  checkSize(body.length, name, options.maxPayload);
  const fields: Record<string, string> = options.headers
    ? { ...options.headers, [ID_HEADER]: id }
    : { [ID_HEADER]: id };
  if (options.retryOf) fields[RETRY_OF_HEADER] = options.retryOf;
  if (options.notBefore !== undefined) fields[NOT_BEFORE_HEADER] = String(options.notBefore);
  if (options.priority) fields[PRIORITY_HEADER] = String(checkPriority(options.priority));
  const route = routeJob(jobSubject(name), name, fields);
  const header = headers();
  for (const [key, value] of Object.entries(route.headers)) header.set(key, value);
  const ack: PubAck = await js.publish(route.subject, body, { msgID: jobMessageId(name, id), headers: header });
  if (ack.duplicate && options.onDuplicate) await options.onDuplicate({ stream: ack.stream, seq: ack.seq });
  return { id, seq: ack.seq, duplicate: ack.duplicate };
}

/** Refuses a job for a name no function can have, or with an id a caller may not choose. */
export function checkJob(name: string, id: string): void {
  if (!isValidFunctionName(name)) throw new JetfnError("E_FUNCTION_NOT_FOUND", describeInvalidName(name));
  if (!isValidInvocationId(id)) {
    throw new JetfnError("E_INPUT_INVALID", `invocation id "${id}" must be 8-128 letters, digits, "-" or "_"`);
  }
  if (isReservedInvocationId(id)) {
    throw new JetfnError(
      "E_INPUT_INVALID",
      `invocation id "${id}" is shaped like the ids jetfn derives itself; choose another`,
    );
  }
}

/** JSON-encodes an input, refusing what the server would refuse with a precise error. */
export function encodeInput(input: unknown, name: string, maxPayload?: number): Uint8Array {
  const body = new TextEncoder().encode(toJson(input, name));
  checkSize(body.length, name, maxPayload);
  return body;
}

/** The input as JSON text (an outbox row's body), with the same checks as encodeInput. */
export function inputJson(input: unknown, name: string, maxPayload?: number): string {
  const json = toJson(input, name);
  if (maxPayload !== undefined) checkSize(Buffer.byteLength(json), name, maxPayload);
  return json;
}

function toJson(input: unknown, name: string): string {
  const json = input === undefined ? "" : JSON.stringify(input);
  if (json === undefined) throw new JetfnError("E_INPUT_INVALID", `input for ${name} cannot be encoded as JSON`);
  return json;
}

function checkSize(bytes: number, name: string, maxPayload: number | undefined): void {
  // Headers take a few hundred bytes of the same budget.
  if (maxPayload !== undefined && bytes > maxPayload - 512) {
    throw new JetfnError(
      "E_PAYLOAD_TOO_LARGE",
      `input for ${name} is ${bytes} bytes; the NATS server accepts at most ${maxPayload} bytes per message (headers included)`,
    );
  }
}
