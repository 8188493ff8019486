import type { JetStreamManager } from "@nats-io/jetstream";
import type { NatsConnection, Subscription } from "@nats-io/transport-node";
import type { Limiter } from "../invocation/limiter";
import type { ConsumerSettings } from "../nats/consumer-definitions";
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
  fn: string,
  settings: ConsumerSettings,
): Promise<void> {
  const base = consumerConfigFor(fn, settings);
  for (const level of PRIORITY_LEVELS) {
    const name = priorityConsumerName(fn, level);
    const wanted = {
      ...base,
      durable_name: name,
      filter_subject: prioritySubject(fn, level),
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

/** Where a function's priority jobs can be seen arriving or waiting. */
export interface PriorityWatch {
  nc: NatsConnection;
  manager: JetStreamManager;
  stream: string;
}

/**
 * Pulls a function's priority levels, each with a puller of its own that shares the function's
 * limiter (whose waiters of a higher priority go first). A level's puller starts the first time
 * this runtime sees a job of that level: one stored before it started (its consumer has jobs
 * pending), or one published since (a core subscription on the level's subject hears every
 * publish, and is dropped once the level's puller runs). A function that never gets a priority job
 * costs three idle subscriptions, no pull requests. Once started, a puller keeps a pull request
 * waiting, so the level's jobs are fetched as soon as they are stored, whatever the normal backlog.
 */
export function startPriorityPullers(
  options: Omit<JobPullerOptions, "consumer" | "handle">,
  limiter: () => Limiter,
  handle: (limiter: Limiter) => JobPullerOptions["handle"],
  watch: PriorityWatch,
): PriorityPullers {
  const pullers = new Map<number, JobPuller>();
  const subscriptions = new Map<number, Subscription>();
  let stopped = false;
  const start = (level: number): void => {
    if (stopped || pullers.has(level)) return;
    const puller = createJobPuller({
      ...options,
      consumer: priorityConsumerName(options.fn, level),
      handle: handle(prioritised(limiter, level)),
    });
    pullers.set(level, puller);
    puller.start();
    // Its puller runs for good now: hearing each job's body as well would only cost bandwidth.
    subscriptions.get(level)?.unsubscribe();
    subscriptions.delete(level);
  };
  // Subscribed before the consumers are asked, so no job falls between the two.
  for (const level of PRIORITY_LEVELS) {
    subscriptions.set(level, watch.nc.subscribe(prioritySubject(options.fn, level), { callback: () => start(level) }));
  }
  for (const level of PRIORITY_LEVELS) {
    void watch.manager.consumers
      .info(watch.stream, priorityConsumerName(options.fn, level))
      .then((info) => {
        if (info.num_pending + info.num_ack_pending > 0) start(level);
      })
      .catch((error: unknown) => {
        // Unknown: pull anyway rather than leave stored priority jobs waiting.
        options.logger.debug({ err: error, fn: options.fn, level }, "Could not read a priority consumer; pulling it.");
        start(level);
      });
  }
  return {
    get held() {
      let held = 0;
      for (const puller of pullers.values()) held += puller.held;
      return held;
    },
    refresh() {
      for (const puller of pullers.values()) puller.refresh();
    },
    async stop() {
      stopped = true;
      for (const subscription of subscriptions.values()) subscription.unsubscribe();
      await Promise.all([...pullers.values()].map((puller) => puller.stop()));
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
