import type { NatsConnection, Subscription } from "@nats-io/transport-node";
import type { Limiter } from "../invocation/limiter";
import { createJobPuller, type JobPuller, type JobPullerOptions } from "../nats/job-puller";
import { PRIORITY_LEVELS, priorityConsumerName, prioritySubject } from "./priority";
import type { PriorityBacklog } from "./priority-backlog";

/** A function's pullers of its priority levels. */
export interface PriorityPullers {
  readonly held: number;
  refresh(): void;
  stop(): Promise<void>;
}

/** Where a function's priority jobs can be seen arriving or waiting, and how a level gets its consumer. */
export interface PriorityWatch {
  nc: NatsConnection;
  /** Shared by the runtime's functions, so that they all ask with one read after a reconnect. */
  backlog: PriorityBacklog;
  /** Creates the level's consumer, or updates its settings, with the definition in force; never throws. */
  ensureConsumer: (level: number) => Promise<void>;
}

/** First wait before asking again whether priority jobs wait, after the stream could not be read. */
const RECHECK_MIN_MS = 1_000;
const RECHECK_MAX_MS = 30_000;

/**
 * Pulls a function's priority levels, each with a puller of its own that shares the function's
 * limiter (whose waiters of a higher priority go first). A level's consumer and puller start the
 * first time this runtime sees a job of that level: one stored before it started or while it was
 * disconnected (the stream holds jobs on the level's subject that no consumer took yet), or one
 * published since (a core subscription on the level's subject hears every publish, whoever makes
 * it, and is dropped once the level's puller runs). A function that never gets a priority job costs
 * three idle subscriptions: no consumers (flow/priority-consumers.ts), no pull requests. Once
 * started, a puller keeps a pull request waiting, so the level's jobs are fetched as soon as they
 * are stored, whatever the normal backlog.
 */
export function startPriorityPullers(
  options: Omit<JobPullerOptions, "consumer" | "handle" | "recover">,
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
      recover: () => watch.ensureConsumer(level),
    });
    pullers.set(level, puller);
    // Its puller runs for good now: hearing each job's body as well would only cost bandwidth.
    subscriptions.get(level)?.unsubscribe();
    subscriptions.delete(level);
    // Pulling starts once the consumer is there; if it could not be made, the puller's recovery retries.
    void watch.ensureConsumer(level).finally(() => {
      if (!stopped) puller.start();
    });
  };
  // Subscribed before the stream is asked, so no job falls between the two.
  for (const level of PRIORITY_LEVELS) {
    subscriptions.set(level, watch.nc.subscribe(prioritySubject(options.fn, level), { callback: () => start(level) }));
  }
  // One look for waiting priority jobs at a time: a refresh while it retries makes it look again at once.
  let looking = false;
  let lookAgain = false;
  let endPause: (() => void) | undefined;
  const pause = (ms: number): Promise<void> =>
    new Promise((resolve) => {
      const timer = setTimeout(() => endPause?.(), ms).unref();
      endPause = () => {
        clearTimeout(timer);
        endPause = undefined;
        resolve();
      };
    });
  const lookUntilAnswered = async (): Promise<void> => {
    try {
      for (let delay = RECHECK_MIN_MS; !stopped && subscriptions.size > 0; ) {
        lookAgain = false;
        try {
          for (const level of await watch.backlog.waitingLevels(options.fn, [...pullers.keys()])) start(level);
          if (!lookAgain) return;
        } catch (error) {
          options.logger.debug(
            { err: error, fn: options.fn, delay },
            "Could not look for waiting priority jobs; asking again.",
          );
          if (!lookAgain) await pause(delay);
        }
        delay = lookAgain ? RECHECK_MIN_MS : Math.min(2 * delay, RECHECK_MAX_MS);
      }
    } finally {
      looking = false;
    }
  };
  const lookForWaiting = (): void => {
    if (looking) {
      lookAgain = true;
      endPause?.();
      return;
    }
    looking = true;
    void lookUntilAnswered();
  };
  lookForWaiting();
  return {
    get held() {
      let held = 0;
      for (const puller of pullers.values()) held += puller.held;
      return held;
    },
    refresh() {
      for (const puller of pullers.values()) puller.refresh();
      // Jobs published while this runtime was disconnected were not heard.
      lookForWaiting();
    },
    async stop() {
      stopped = true;
      endPause?.();
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
