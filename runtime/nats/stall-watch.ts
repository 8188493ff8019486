import type { JetStreamManager } from "@nats-io/jetstream";
import type { Logger } from "pino";
import type { RuntimeEmitter } from "../triggers/events";
import { type ConsumerLookup, lookUpConsumers } from "./consumer-lookup";
import { consumerName } from "./subjects";

/** What the watch needs to know about one deployed function in this process. */
export interface WatchedPuller {
  fn: string;
  /** Jobs this process holds now, and the most it may hold. */
  held: number;
  window: number;
  /** Drops this process's pull requests and issues new ones. */
  refresh(): void;
  /** Creates the function's consumer again (it was deleted, or the server lost it). */
  recover(): Promise<void>;
}

/** Options of the stall watch. */
export interface StallWatchOptions {
  manager: JetStreamManager;
  stream: string;
  /** The functions deployed in this process, read on every check. */
  pullers: () => WatchedPuller[];
  intervalMs: number;
  events: RuntimeEmitter;
  logger: Logger;
}

/** Periodically checks each function's consumer for jobs that wait while nothing is delivered. */
export interface StallWatch {
  /** Runs one check of every function now (also what the timer does). */
  check(): Promise<void>;
  close(): Promise<void>;
}

/**
 * Starts the watch. A consumer counts as stalled when its jobs wait but the delivered sequence did
 * not move for a whole interval although this process has room (lost pull requests after a server
 * restart or missed heartbeats): the pull requests are issued again. When the consumer is missing it
 * is created again; when max ack pending is reached nothing can be pulled until jobs finish, so that
 * is reported only. Every case emits `consumer:stalled` and logs a warning.
 *
 * Each check reads the stream's consumers with one listing (paged by the server, 256 a page)
 * instead of one info request per function (500 functions made 500 requests a check); a consumer
 * the listing leaves out is asked for on its own before it counts as missing (nats/consumer-lookup.ts).
 */
export function startStallWatch(options: StallWatchOptions): StallWatch {
  const lastSeen = new Map<string, { delivered: number; pending: number }>();
  const reported = new Set<string>();
  let running: Promise<void> | undefined;
  const stalled = (fn: string, reason: string): void => {
    options.events.emit("consumer:stalled", { fn, reason });
    options.logger.warn({ fn, reason }, `The consumer of ${fn} stalled: ${reason}.`);
  };
  const checkOne = async (puller: WatchedPuller, consumers: ConsumerLookup): Promise<void> => {
    const info = await consumers.info(consumerName(puller.fn));
    if (!info) {
      stalled(puller.fn, "its consumer is missing; creating it again");
      await puller.recover();
      puller.refresh();
      return;
    }
    const delivered = info.delivered.consumer_seq;
    const previous = lastSeen.get(puller.fn);
    lastSeen.set(puller.fn, { delivered, pending: info.num_pending });
    const maxAckPending = info.config.max_ack_pending ?? -1;
    if (maxAckPending > 0 && info.num_ack_pending >= maxAckPending && info.num_pending > 0) {
      if (!reported.has(puller.fn)) {
        stalled(puller.fn, `max ack pending (${maxAckPending}) reached with ${info.num_pending} job(s) waiting`);
      }
      reported.add(puller.fn);
      return;
    }
    reported.delete(puller.fn);
    const idle = previous !== undefined && previous.pending > 0 && previous.delivered === delivered;
    if (idle && info.num_pending > 0 && puller.held < puller.window) {
      stalled(puller.fn, `${info.num_pending} job(s) wait but none was delivered in the last check; pulling again`);
      puller.refresh();
    }
  };
  const check = async (): Promise<void> => {
    const pullers = options.pullers();
    if (pullers.length === 0) return;
    let consumers: ConsumerLookup;
    try {
      // With the stream gone, every consumer counts as missing and is created again.
      consumers = await lookUpConsumers(options.manager, options.stream, pullers.length);
    } catch (error) {
      options.logger.debug({ err: error }, "Could not list the consumers; checking them at the next check.");
      return;
    }
    for (const puller of pullers) {
      await checkOne(puller, consumers).catch((error: unknown) =>
        options.logger.debug({ err: error, fn: puller.fn }, "Could not check the consumer; trying at the next check."),
      );
    }
  };
  const timer = setInterval(() => {
    running ??= check().finally(() => {
      running = undefined;
    });
  }, options.intervalMs);
  timer.unref();
  return {
    check,
    async close() {
      clearInterval(timer);
      await running;
    },
  };
}
