import type { ConsumerInfo, JetStreamManager } from "@nats-io/jetstream";
import type { ConsumerSettings } from "../nats/consumer-definitions";
import { consumerInfo } from "../nats/consumer-lookup";
import { consumerConfigFor } from "../nats/streams";
import { PRIORITY_LEVELS, priorityConsumerName, prioritySubject } from "./priority";

/**
 * A function's priority consumers (`<consumer>:P<n>`, flow/priority.ts) exist only for the levels
 * that have had a job: a deploy creates the function's own consumer, and a level's consumer is
 * created the first time a runtime sees a job of that level (flow/priority-pullers.ts). On a
 * cluster each consumer is a Raft group of its own, so a function that never gets a priority job
 * costs one group instead of four. Jobs published before their level's consumer exists wait in the
 * stream: the consumer starts from the stream's first message of its subject.
 */

/** Creates a level's consumer with `settings`, or brings the settings of an existing one up to date. */
export async function ensurePriorityConsumer(
  manager: JetStreamManager,
  stream: string,
  fn: string,
  level: number,
  settings: ConsumerSettings,
): Promise<void> {
  if (await updateIfPresent(manager, stream, fn, level, settings)) return;
  try {
    await manager.consumers.add(stream, levelConfig(fn, level, settings));
  } catch (error) {
    // Another runtime created it meanwhile, perhaps with an older definition's settings.
    if (!(await updateIfPresent(manager, stream, fn, level, settings))) throw error;
  }
}

/** Brings the settings of a function's priority consumers that exist up to date; creates none. */
export async function updatePriorityConsumers(
  manager: JetStreamManager,
  stream: string,
  fn: string,
  settings: ConsumerSettings,
): Promise<void> {
  for (const level of PRIORITY_LEVELS) await updateIfPresent(manager, stream, fn, level, settings);
}

/** The consumer config of one level: the function's settings, the level's subject and name. */
function levelConfig(fn: string, level: number, settings: ConsumerSettings) {
  const base = consumerConfigFor(fn, settings);
  return {
    ...base,
    durable_name: priorityConsumerName(fn, level),
    filter_subject: prioritySubject(fn, level),
    description: `${base.description} (priority ${level})`,
  };
}

/** Updates a level's consumer whose settings differ; false when the level has no consumer. */
async function updateIfPresent(
  manager: JetStreamManager,
  stream: string,
  fn: string,
  level: number,
  settings: ConsumerSettings,
): Promise<boolean> {
  const existing = await levelInfo(manager, stream, fn, level);
  if (!existing) return false;
  const { ack_wait, max_deliver, max_ack_pending, description } = levelConfig(fn, level, settings);
  const current = existing.config;
  if (
    current.ack_wait !== ack_wait ||
    current.max_deliver !== max_deliver ||
    current.max_ack_pending !== max_ack_pending ||
    current.description !== description
  ) {
    await manager.consumers.update(stream, existing.name, { ack_wait, max_deliver, max_ack_pending, description });
  }
  return true;
}

/** A level consumer's info; undefined when it does not exist (any other failure is thrown). */
function levelInfo(
  manager: JetStreamManager,
  stream: string,
  fn: string,
  level: number,
): Promise<ConsumerInfo | undefined> {
  return consumerInfo(manager, stream, priorityConsumerName(fn, level));
}
