import { AckPolicy, type ConsumerConfig, DeliverPolicy, type JetStreamManager } from "@nats-io/jetstream";
import { ackWaitFor, maxDeliveriesFor } from "../invocation/retry-policy";
import type { ResolvedFunction } from "../sdk/define-function";
import { toNanos } from "../support/duration";
import type {
  ConsumerDefinitions,
  ConsumerSettings,
  SettledDefinition,
  WithdrawalOutcome,
} from "./consumer-definitions";
import { consumerInfo, isNotFound } from "./consumer-lookup";
import { DEFAULT_MAX_ACK_PENDING, ensureStream, type StreamSettings } from "./streams";
import { isUnanswered } from "./until-answered";

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

/** The settings of a listener's consumer its definition decides: pattern, start, retry policy, timeout. */
function listenerSettingsFor(fn: ResolvedFunction, maxAckWaitMs: number): ConsumerSettings {
  const listen = fn.listen as NonNullable<ResolvedFunction["listen"]>;
  return {
    description: `jetfn listener ${fn.name} on ${listen.pattern}`,
    filter_subject: eventSubject(listen.pattern),
    deliver_policy: listen.from === "all" ? DeliverPolicy.All : DeliverPolicy.New,
    ack_wait: toNanos(ackWaitFor(fn.timeoutMs, maxAckWaitMs)),
    max_deliver: maxDeliveriesFor(fn.retry),
    max_ack_pending: DEFAULT_MAX_ACK_PENDING,
  };
}

/** What ensureListenerConsumer did to the consumer, and the settings in force. */
export interface ListenerConsumerChange {
  /** "withdrawn": a newer version of the function does not listen; its consumer is to be deleted, not created. */
  change: "created" | "updated" | "replaced" | "unchanged" | "withdrawn";
  settled: SettledDefinition;
  /** The consumer's start (`deliver_policy`) when the definition in force asks for another: it is kept. */
  keptStart?: string;
}

/** What one application of a definition did to the listener's consumer. */
type ListenerConsumerApplied = Pick<ListenerConsumerChange, "change" | "keptStart">;

/**
 * Creates a listener's durable consumer, or updates its policy, with the newest definition's
 * settings (this runtime's unless `definitions` records a newer one: a rolling deploy). When the
 * pattern changed, the consumer is replaced (a filter cannot be changed in place on every server
 * version); the new one starts per `onFrom`, and `replacing` is called once the old one is (or
 * may have been) deleted. A changed `onFrom` alone keeps the consumer where it is (`keptStart`).
 */
export async function ensureListenerConsumer(
  manager: JetStreamManager,
  stream: string,
  fn: ResolvedFunction,
  maxAckWaitMs: number,
  definitions: ConsumerDefinitions,
  replacing: () => void = () => undefined,
): Promise<ListenerConsumerChange> {
  let change: ListenerConsumerChange["change"] = "unchanged";
  let keptStart: string | undefined;
  const mine = { definedAt: fn.definedAt, settings: listenerSettingsFor(fn, maxAckWaitMs) };
  const settled = await definitions.settle(
    fn.name,
    mine,
    async (settings) => {
      const applied = await applyListenerSettings(manager, stream, listenerConsumerName(fn.name), settings, replacing);
      if (applied.change !== "unchanged") change = applied.change;
      keptStart = applied.keptStart;
    },
    "events",
  );
  // The caller deletes the consumer: this runtime may have created it just before the withdrawal
  // was recorded (settle saw the record move).
  if (settled.withdrawn) return { change: "withdrawn", settled };
  return { change, settled, keptStart };
}

/**
 * Stops `fn` listening for every runtime, as of its definition written at `definedAt`: records the
 * withdrawal, so that runtimes still on an older version that listened do not create the consumer
 * again (with `onFrom: "all"` it would deliver every kept event once more), then deletes it. A newer
 * definition that listens keeps its consumer ("newer"). After "already" (another runtime, or an
 * earlier start, withdrew it) the consumer is deleted too: that delete may have been lost.
 */
export async function withdrawListenerConsumer(
  manager: JetStreamManager,
  stream: string,
  fn: string,
  definedAt: number,
  definitions: ConsumerDefinitions,
): Promise<WithdrawalOutcome> {
  const outcome = await definitions.withdraw(fn, definedAt, "events");
  if (outcome !== "newer") await deleteListenerConsumer(manager, stream, fn);
  return outcome;
}

async function applyListenerSettings(
  manager: JetStreamManager,
  stream: string,
  name: string,
  settings: ConsumerSettings,
  replacing: () => void,
): Promise<ListenerConsumerApplied> {
  const wanted: Partial<ConsumerConfig> = {
    ...settings,
    durable_name: name,
    ack_policy: AckPolicy.Explicit,
    deliver_policy: settings.deliver_policy as DeliverPolicy,
  };
  // Only "not found" is missing: a create after an info NATS did not answer in time is refused
  // (2.10+) or moves the filter in place (2.9), and the consumer does not start anew per onFrom.
  const existing = await consumerInfo(manager, stream, name);
  if (!existing) {
    await manager.consumers.add(stream, wanted);
    return { change: "created" };
  }
  const current = existing.config;
  if (current.filter_subject !== settings.filter_subject) {
    try {
      await deleteConsumer(manager, stream, name);
    } catch (error) {
      // Unanswered, it may have been deleted all the same: the next try then finds none to replace.
      if (isUnanswered(error)) replacing();
      throw error;
    }
    replacing();
    await manager.consumers.add(stream, wanted);
    return { change: "replaced" };
  }
  // A start cannot be changed in place, and a new consumer would run every kept event again ("all")
  // or skip those not yet delivered ("new"): the consumer keeps its position, and the caller warns.
  const keptStart =
    settings.deliver_policy !== undefined && current.deliver_policy !== settings.deliver_policy
      ? current.deliver_policy
      : undefined;
  if (
    current.ack_wait !== settings.ack_wait ||
    current.max_deliver !== settings.max_deliver ||
    current.max_ack_pending !== settings.max_ack_pending ||
    current.description !== settings.description
  ) {
    await manager.consumers.update(stream, name, {
      ack_wait: settings.ack_wait,
      max_deliver: settings.max_deliver,
      max_ack_pending: settings.max_ack_pending,
      description: settings.description,
    });
    return { change: "updated", keptStart };
  }
  return { change: "unchanged", keptStart };
}

/**
 * Deletes a listener's consumer (when a function stops listening). A missing one counts as deleted;
 * any other failure is thrown, since a consumer left behind keeps its position and would deliver
 * every event since if the function listened again.
 */
export function deleteListenerConsumer(manager: JetStreamManager, stream: string, fn: string): Promise<void> {
  return deleteConsumer(manager, stream, listenerConsumerName(fn));
}

/** Deletes a consumer; one already gone counts as deleted (an earlier, unanswered try may have done it). */
async function deleteConsumer(manager: JetStreamManager, stream: string, name: string): Promise<void> {
  try {
    await manager.consumers.delete(stream, name);
  } catch (error) {
    if (!isNotFound(error)) throw error;
  }
}
