import {
  AckPolicy,
  type ConsumerConfig,
  DeliverPolicy,
  DiscardPolicy,
  type JetStreamManager,
  RetentionPolicy,
  StorageType,
  type StreamConfig,
} from "@nats-io/jetstream";
import { ackWaitFor, maxDeliveriesFor } from "../invocation/retry-policy";
import type { ResolvedFunction } from "../sdk/define-function";
import { toNanos } from "../support/duration";
import type { ConsumerDefinitions, ConsumerSettings, SettledDefinition } from "./consumer-definitions";
import { consumerInfo } from "./consumer-lookup";
import { streamInfo } from "./stream-lookup";
import { addStreamIfMissing, type Replication } from "./stream-replicas";
import { consumerName, JOB_PREFIX, jobSubject } from "./subjects";

/** Settings of a jetfn stream (jobs or events). */
export interface StreamSettings {
  name: string;
  retentionMs: number;
  duplicateWindowMs: number;
  /** Replicas and placement a new stream gets (an existing one is scaled up by scaleUpStreams). */
  replication: Replication;
}

/** Unacknowledged jobs one function's consumer may hand out across all runtimes. */
export const DEFAULT_MAX_ACK_PENDING = 10_000;

/** Creates the jobs stream on `fn.job.>`, or brings an existing one's settings up to date. */
export function ensureJobStream(manager: JetStreamManager, settings: StreamSettings): Promise<void> {
  // Jobs stay after they are acknowledged so `jetfn replay` can re-run history.
  return ensureStream(manager, settings, `${JOB_PREFIX}>`, "jetfn jobs: one subject per function, fn.job.<name>");
}

/**
 * Creates a limits-retention file stream, or updates its retention and duplicate window (its
 * replicas are left to scaleUpStreams).
 */
export async function ensureStream(
  manager: JetStreamManager,
  settings: StreamSettings,
  subject: string,
  description: string,
): Promise<void> {
  const config: Partial<StreamConfig> & { name: string } = {
    name: settings.name,
    subjects: [subject],
    description,
    retention: RetentionPolicy.Limits,
    storage: StorageType.File,
    discard: DiscardPolicy.Old,
    max_age: toNanos(settings.retentionMs),
    duplicate_window: toNanos(settings.duplicateWindowMs),
  };
  const existing = await streamInfo(manager, settings.name);
  if (!existing) {
    await addStreamIfMissing(manager, config, settings.replication);
    return;
  }
  const current = existing.config;
  if (current.max_age !== config.max_age || current.duplicate_window !== config.duplicate_window) {
    await manager.streams.update(settings.name, { ...current, ...config });
  }
}

/** The settings of a function's consumer that its definition decides: retry policy, timeout, description. */
function consumerSettingsFor(fn: ResolvedFunction, maxAckWaitMs: number): ConsumerSettings {
  return {
    ack_wait: toNanos(ackWaitFor(fn.timeoutMs, maxAckWaitMs)),
    max_deliver: maxDeliveriesFor(fn.retry),
    max_ack_pending: DEFAULT_MAX_ACK_PENDING,
    description: fn.description || `jetfn function ${fn.name}`,
  };
}

/** The durable consumer of a function's jobs, with `settings`. */
export function consumerConfigFor(fn: string, settings: ConsumerSettings): Partial<ConsumerConfig> {
  return {
    ...settings,
    durable_name: consumerName(fn),
    filter_subject: jobSubject(fn),
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.All,
  };
}

/**
 * Creates a function's durable consumer, or updates it, with the newest definition's settings:
 * this runtime's, unless `definitions` records a newer one (a rolling deploy, where runtimes of the
 * old and the new version run side by side). `follow` applies the same settings to the function's
 * other job consumers (its priority levels), told whether this consumer was created or changed.
 * Returns the settings in force.
 */
export async function ensureFunctionConsumer(
  manager: JetStreamManager,
  stream: string,
  fn: ResolvedFunction,
  maxAckWaitMs: number,
  definitions: ConsumerDefinitions,
  follow?: (settings: ConsumerSettings, changed: boolean) => Promise<void>,
): Promise<SettledDefinition> {
  const mine = { definedAt: fn.definedAt, settings: consumerSettingsFor(fn, maxAckWaitMs) };
  return definitions.settle(fn.name, mine, async (settings) => {
    const changed = await applyConsumerSettings(manager, stream, fn.name, settings);
    await follow?.(settings, changed);
  });
}

/** Creates the consumer of `fn` with `settings`, or updates the settings that differ; true if it did either. */
async function applyConsumerSettings(
  manager: JetStreamManager,
  stream: string,
  fn: string,
  settings: ConsumerSettings,
): Promise<boolean> {
  const name = consumerName(fn);
  const existing = await consumerInfo(manager, stream, name);
  if (!existing) {
    await manager.consumers.add(stream, consumerConfigFor(fn, settings));
    return true;
  }
  const current = existing.config;
  const changed =
    current.ack_wait !== settings.ack_wait ||
    current.max_deliver !== settings.max_deliver ||
    current.max_ack_pending !== settings.max_ack_pending ||
    current.description !== settings.description;
  if (changed) await manager.consumers.update(stream, name, { ...settings });
  return changed;
}
