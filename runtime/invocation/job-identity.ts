import { createHash } from "node:crypto";
import type { JsMsg } from "@nats-io/jetstream";
import { headerValue } from "../nats/header-value";
import { ID_HEADER, isReservedInvocationId, isValidInvocationId, RETRY_OF_HEADER } from "../nats/subjects";
import { isoAt } from "../support/clock";

/** Who a job message is: its handle and where it came from. */
export interface JobIdentity {
  id: string;
  /** Set when the message carried an id we could not use (reported as the job's error). */
  invalidId: string | undefined;
  retryOf: string | undefined;
  enqueuedAt: string;
  streamSeq: number;
}

/**
 * Reads a job's identity. Publishers using the SDK send a random id in `Jetfn-Id`; for a plain
 * publish without one, the id is derived from the stream position and the server's nanosecond
 * timestamp, so every redelivery maps to the same id and outsiders cannot guess it. A given id
 * shaped like a derived one is refused (see isReservedInvocationId); the job is then recorded
 * under its own derived id.
 */
export function jobIdentity(message: JsMsg): JobIdentity {
  const headers = message.headers;
  const given = headerValue(headers, ID_HEADER);
  const retryOf = headerValue(headers, RETRY_OF_HEADER);
  const valid = given !== undefined && isValidInvocationId(given) && !isReservedInvocationId(given);
  return {
    id: valid ? given : derivedId(message),
    invalidId: given !== undefined && !valid ? given : undefined,
    retryOf: retryOf && isValidInvocationId(retryOf) ? retryOf : undefined,
    // As message.time, without a Date per job.
    enqueuedAt: isoAt(Math.floor(message.info.timestampNanos / 1_000_000)),
    streamSeq: message.seq,
  };
}

function derivedId(message: JsMsg): string {
  const hex = createHash("sha256")
    .update(`${message.info.stream}:${message.seq}:${message.timestampNanos}`)
    .digest("hex");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-8${hex.slice(13, 16)}-${hex.slice(16, 20)}-${hex.slice(20, 32)}`;
}
