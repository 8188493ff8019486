import { AckPolicy, type ConsumerConfig, DeliverPolicy, type JetStreamManager } from "@nats-io/jetstream";
import type { ResolvedFunction } from "../define-function";
import { toNanos } from "../duration";
import { ackWaitFor, maxDeliveriesFor } from "../retry-policy";
import { DEFAULT_MAX_ACK_PENDING, ensureStream, type StreamSettings } from "./streams";

/** Subject prefix of events: `fn.event.<name>`, captured by the events stream. */
export const EVENT_PREFIX = "fn.event.";
/** Name of the JetStream stream holding events. */
export const EVENT_STREAM = "JETFN_EVENTS";

/** Settings of the events stream: the same as the jobs stream's. */
export type EventStreamSettings = StreamSettings;

/** `comment.created` -> `fn.event.comment.created` (patterns keep their wildcards). */
export function eventSubject(nameOrPattern: string): string {
  return EVENT_PREFIX + nameOrPattern;
}

/**
 * Durable consumer name of a listener on the events stream: `blog.notify` -> `on-blog:notify`
 * (distinct from the function's job consumer `blog:notify`; names cannot hold dots).
 */
export function listenerConsumerName(fn: string): string {
  return `on-${fn.replaceAll(".", ":")}`;
}

/** Creates the events stream on `fn.event.>`, or brings an existing one's settings up to date. */
export function ensureEventStream(manager: JetStreamManager, settings: EventStreamSettings): Promise<void> {
  return ensureStream(
    manager,
    settings,
    `${EVENT_PREFIX}>`,
    "jetfn events: fn.event.<name>, one durable consumer per listening function",
  );
}

/** The durable consumer a listener gets: its pattern as filter, its retry policy, its start point. */
export function listenerConsumerConfig(fn: ResolvedFunction, maxAckWaitMs: number): Partial<ConsumerConfig> {
  const listen = fn.listen as NonNullable<ResolvedFunction["listen"]>;
  return {
    durable_name: listenerConsumerName(fn.name),
    description: `jetfn listener ${fn.name} on ${listen.pattern}`,
    filter_subject: eventSubject(listen.pattern),
    ack_policy: AckPolicy.Explicit,
    deliver_policy: listen.from === "all" ? DeliverPolicy.All : DeliverPolicy.New,
    ack_wait: toNanos(ackWaitFor(fn.timeoutMs, maxAckWaitMs)),
    max_deliver: maxDeliveriesFor(fn.retry),
    max_ack_pending: DEFAULT_MAX_ACK_PENDING,
  };
}

/**
 * Creates a listener's durable consumer, or updates its policy. When the pattern changed, the
 * consumer is replaced (a filter cannot be changed in place on every server version); the new one
 * starts per `onFrom`.
 */
export async function ensureListenerConsumer(
  manager: JetStreamManager,
  stream: string,
  fn: ResolvedFunction,
  maxAckWaitMs: number,
): Promise<"created" | "updated" | "replaced" | "unchanged"> {
  const wanted = listenerConsumerConfig(fn, maxAckWaitMs);
  const name = wanted.durable_name as string;
  const existing = await manager.consumers.info(stream, name).catch(() => undefined);
  if (!existing) {
    await manager.consumers.add(stream, wanted);
    return "created";
  }
  const current = existing.config;
  if (current.filter_subject !== wanted.filter_subject) {
    await manager.consumers.delete(stream, name);
    await manager.consumers.add(stream, wanted);
    return "replaced";
  }
  if (
    current.ack_wait !== wanted.ack_wait ||
    current.max_deliver !== wanted.max_deliver ||
    current.description !== wanted.description
  ) {
    await manager.consumers.update(stream, name, {
      ack_wait: wanted.ack_wait,
      max_deliver: wanted.max_deliver,
      max_ack_pending: wanted.max_ack_pending,
      description: wanted.description,
    });
    return "updated";
  }
  return "unchanged";
}

/** Deletes a listener's consumer (when a function stops listening); missing is fine. */
export async function deleteListenerConsumer(manager: JetStreamManager, stream: string, fn: string): Promise<void> {
  await manager.consumers.delete(stream, listenerConsumerName(fn)).catch(() => false);
}
