import { createHash } from "node:crypto";
import type { JsMsg } from "@nats-io/jetstream";
import type { JobIdentity } from "../invocation/job-identity";
import { MSG_ID_HEADER } from "../nats/subjects";

/**
 * The identity of one event delivered to one listener. The invocation id is derived from the
 * listener's name and the event's id (its `Nats-Msg-Id`, or for a plain publish its stream position
 * and timestamp), so every listener keeps its own record of the same event and every redelivery to
 * a listener maps to the same id (the effectively-once fence applies per listener).
 */
export function eventIdentity(listener: string, message: JsMsg): JobIdentity {
  const eventId =
    message.headers?.get(MSG_ID_HEADER) || `${message.info.stream}:${message.seq}:${message.timestampNanos}`;
  const hex = createHash("sha256").update(`${listener}\n${eventId}`).digest("hex");
  return {
    id: `${hex.slice(0, 8)}-${hex.slice(8, 12)}-8${hex.slice(13, 16)}-${hex.slice(16, 20)}-${hex.slice(20, 32)}`,
    invalidId: undefined,
    retryOf: undefined,
    enqueuedAt: message.time.toISOString(),
    streamSeq: message.seq,
  };
}
