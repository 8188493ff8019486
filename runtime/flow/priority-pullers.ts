import type { JetStreamManager } from "@nats-io/jetstream";
import type { ResolvedFunction } from "../define-function";
import type { Limiter } from "../limiter";
import { createJobPuller, type JobPuller, type JobPullerOptions } from "../nats/job-puller";
import { consumerConfigFor } from "../nats/streams";
import { PRIORITY_LEVELS, priorityConsumerName, prioritySubject } from "./priority";

/**
 * Creates or updates a function's priority consumers, one per level, with the settings of its
 * normal consumer (ack wait, deliveries, acks pending) and the level's subject as filter.
 */
export async function ensurePriorityConsumers(
  manager: JetStreamManager,
  stream: string,
  fn: ResolvedFunction,
  maxAckWaitMs: number,
): Promise<void> {
  const base = consumerConfigFor(fn, maxAckWaitMs);
  for (const level of PRIORITY_LEVELS) {
    const name = priorityConsumerName(fn.name, level);
    const wanted = {
      ...base,
      durable_name: name,
      filter_subject: prioritySubject(fn.name, level),
      description: `${base.description} (priority ${level})`,
    };
    const existing = await manager.consumers.info(stream, name).catch(() => undefined);
    if (!existing) {
      await manager.consumers.add(stream, wanted);
      continue;
    }
    const current = existing.config;
    if (
      current.ack_wait !== wanted.ack_wait ||
      current.max_deliver !== wanted.max_deliver ||
      current.max_ack_pending !== wanted.max_ack_pending ||
      current.description !== wanted.description
    ) {
      const { ack_wait, max_deliver, max_ack_pending, description } = wanted;
      await manager.consumers.update(stream, name, { ack_wait, max_deliver, max_ack_pending, description });
    }
  }
}

/** A function's pullers of its priority levels. */
export interface PriorityPullers {
  readonly held: number;
  refresh(): void;
  stop(): Promise<void>;
}

/**
 * Starts one puller per priority level, sharing the function's limiter, whose waiters of a higher
 * priority go first. Each puller keeps a pull request waiting on the server, so a priority job is
 * fetched as soon as it is stored, whatever backlog the normal consumer has.
 */
export function startPriorityPullers(
  options: Omit<JobPullerOptions, "consumer" | "handle">,
  fn: string,
  limiter: () => Limiter,
  handle: (limiter: Limiter) => JobPullerOptions["handle"],
): PriorityPullers {
  const pullers: JobPuller[] = PRIORITY_LEVELS.map((level) =>
    createJobPuller({
      ...options,
      consumer: priorityConsumerName(fn, level),
      handle: handle(prioritised(limiter, level)),
    }),
  );
  for (const puller of pullers) puller.start();
  return {
    get held() {
      return pullers.reduce((sum, puller) => sum + puller.held, 0);
    },
    refresh() {
      for (const puller of pullers) puller.refresh();
    },
    async stop() {
      await Promise.all(pullers.map((puller) => puller.stop()));
    },
  };
}

/** The function's limiter (read at each acquire: a redeploy may change its capacity) asked at `level`. */
function prioritised(limiter: () => Limiter, level: number): Limiter {
  return {
    get active() {
      return limiter().active;
    },
    get waiting() {
      return limiter().waiting;
    },
    get capacity() {
      return limiter().capacity;
    },
    set capacity(value: number) {
      limiter().capacity = value;
    },
    acquire: (signal) => limiter().acquire(signal, level),
  };
}
