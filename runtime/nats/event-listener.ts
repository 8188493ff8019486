import type { JetStreamClient, JetStreamManager } from "@nats-io/jetstream";
import type { Logger } from "pino";
import { keepJobAlive } from "../invocation/database-outage";
import { type JobRunnerDependencies, runJob } from "../invocation/job-runner";
import type { Limiter } from "../invocation/limiter";
import { ackWaitFor } from "../invocation/retry-policy";
import type { ResolvedFunction } from "../sdk/define-function";
import { eventIdentity } from "../triggers/event-identity";
import type { ConsumerDefinitions, ConsumerSettings } from "./consumer-definitions";
import {
  deleteListenerConsumer,
  ensureListenerConsumer,
  listenerConsumerName,
  withdrawListenerConsumer,
} from "./event-stream";
import { createJobPuller, type JobPuller } from "./job-puller";

/**
 * One function's subscription to events: its own durable consumer on the events stream, pulled
 * like its jobs and run by the same job runner (so retries, dead letters and the effectively-once
 * fence apply per listener), sharing the function's concurrency limit.
 */
export interface EventListener {
  /** False while a newer version of the function, run by other runtimes, does not listen. */
  readonly listening: boolean;
  /** The function was redeployed (the worker holds the new version): follow its pattern and policy. */
  update(): Promise<void>;
  /** Stops pulling; resolves when every held event has been handled. */
  stop(): Promise<void>;
  /** Stops pulling and deletes the consumer (the function no longer listens). */
  remove(): Promise<void>;
}

/** What a listener needs from the runtime. */
export interface EventListenerOptions {
  js: JetStreamClient;
  manager: JetStreamManager;
  stream: string;
  maxAckWaitMs: number;
  /** The newest definitions of the functions' consumers, shared by all runtimes. */
  definitions: ConsumerDefinitions;
  /** The function's current version and its limiter (shared with its jobs). */
  worker: { fn: ResolvedFunction; limiter: Limiter };
  dependencies: () => JobRunnerDependencies;
  /**
   * Runs the consumer's setup at the listener's start and update (a deploy) under the runtime's
   * start-up retry policy (nats/until-answered.ts); the puller's recovery asks once, in its own loop.
   */
  deploying: <T>(what: string, request: () => Promise<T>) => Promise<T>;
  logger: Logger;
}

/**
 * Creates the listener's consumer (if needed) and starts pulling its events; or, when a newer
 * version of the function stopped listening (a rolling deploy), neither, until a redeploy listens again.
 */
export async function startEventListener(options: EventListenerOptions): Promise<EventListener> {
  const { worker, logger } = options;
  // The ack wait in force: a newer definition run by other runtimes may have set a shorter one.
  let consumerAckWaitMs = Number.POSITIVE_INFINITY;
  // Set when a try deletes the consumer to replace it, until the replacement is told: a try whose
  // create then goes unanswered leaves the next one no consumer to replace, only one to create.
  let replaced = false;
  let puller: JobPuller | undefined;
  // Stopped or removed: a setup still under way starts no puller.
  let closed = false;
  // A puller stopped because a newer version does not listen; stop() and remove() wait for it.
  let stopping: Promise<void> = Promise.resolve();
  // One setup at a time: a deploy's and the puller's recovery could otherwise each find the
  // other's consumer missing or replaced, and delete what the other had just created.
  let ensuring = Promise.resolve();
  const ensure = (asking: Asking = once): Promise<void> => {
    ensuring = ensuring.then(() => ensureOnce(asking));
    return ensuring;
  };
  const ensureOnce = async (asking: Asking): Promise<void> => {
    try {
      const { change, settled, keptStart } = await asking(`the listener consumer of ${worker.fn.name}`, () =>
        ensureListenerConsumer(
          options.manager,
          options.stream,
          worker.fn,
          options.maxAckWaitMs,
          options.definitions,
          () => {
            replaced = true;
          },
        ),
      );
      if (change === "withdrawn") return await withdrawn();
      consumerAckWaitMs = settled.settings.ack_wait / 1_000_000;
      if (replaced || change === "replaced") {
        replaced = false;
        logger.warn(
          { fn: worker.fn.name, on: worker.fn.listen?.pattern },
          "The listener's pattern changed; its consumer was replaced and starts per onFrom.",
        );
      }
      // A newer definition in force (a rolling deploy) is the newer runtimes' to warn about.
      if (keptStart !== undefined && !settled.newerInForce) {
        warnStartKept(logger, worker.fn.name, settled.settings, options.stream, keptStart);
      }
    } catch (error) {
      logger.error({ err: error, fn: worker.fn.name }, "Could not create or update the listener's consumer.");
    }
    if (!puller && !closed) {
      puller = startPulling();
      logger.info({ fn: worker.fn.name, on: worker.fn.listen?.pattern }, `${worker.fn.name} listens to events.`);
    }
  };
  // A newer version does not listen: no puller, and no consumer, whatever becomes of the delete.
  const withdrawn = async (): Promise<void> => {
    // Not awaited: a puller's recovery runs this, and its stop waits for that recovery.
    if (puller) stopping = Promise.all([stopping, puller.stop()]).then(() => undefined);
    puller = undefined;
    try {
      await deleteListenerConsumer(options.manager, options.stream, worker.fn.name);
    } catch (error) {
      logger.error(
        { err: error, fn: worker.fn.name, consumer: listenerConsumerName(worker.fn.name) },
        "Could not delete the consumer a newer version of the function withdrew; the next start of a runtime tries again.",
      );
    }
  };
  const startPulling = (): JobPuller => {
    const started = createJobPuller({
      js: options.js,
      stream: options.stream,
      consumer: listenerConsumerName(worker.fn.name),
      fn: worker.fn.name,
      concurrency: () => worker.limiter.capacity,
      heartbeatMs: () =>
        Math.floor(Math.min(ackWaitFor(worker.fn.timeoutMs, options.maxAckWaitMs), consumerAckWaitMs) / 3),
      keepAlive: (heldForMs) => keepJobAlive(worker.fn.timeoutMs, options.dependencies().outage, heldForMs),
      handle: (message, handlerDone) =>
        runJob(
          options.dependencies(),
          worker.fn,
          worker.limiter,
          message,
          (delivered) => eventIdentity(worker.fn.name, delivered),
          handlerDone,
        ),
      recover: () => ensure(),
      logger,
    });
    started.start();
    return started;
  };
  const stop = async (): Promise<void> => {
    closed = true;
    const current = puller;
    puller = undefined;
    await Promise.all([stopping, current?.stop()]);
  };
  await ensure(options.deploying);
  return {
    get listening() {
      return puller !== undefined;
    },
    update: () => ensure(options.deploying),
    stop,
    async remove() {
      await stop();
      // A recovery already under way would otherwise create the consumer again after the delete.
      await ensuring;
      const consumer = listenerConsumerName(worker.fn.name);
      try {
        const outcome = await options.deploying(`the deletion of the listener consumer of ${worker.fn.name}`, () =>
          withdrawListenerConsumer(
            options.manager,
            options.stream,
            worker.fn.name,
            worker.fn.definedAt,
            options.definitions,
          ),
        );
        if (outcome === "newer") {
          logger.info(
            { fn: worker.fn.name, consumer },
            "A newer definition of the function listens to events; its consumer stays.",
          );
        }
      } catch (error) {
        logger.error(
          { err: error, fn: worker.fn.name, consumer, stream: options.stream },
          "Could not delete the listener's consumer; delete it by hand, or it resumes from its old position if the function listens again.",
        );
      }
    },
  };
}

/**
 * A changed `onFrom` does not move an existing consumer (event-stream.ts says why): tells the
 * operator the consumer kept its position, and how to start the listener over.
 */
function warnStartKept(logger: Logger, fn: string, inForce: ConsumerSettings, stream: string, keptStart: string): void {
  logger.warn(
    { fn, onFrom: inForce.deliver_policy, consumerStart: keptStart, stream, consumer: listenerConsumerName(fn) },
    "The listener's onFrom changed; its consumer keeps its position, as onFrom only decides where a new listener starts. To start it over, delete its consumer or rename the function.",
  );
}

/** How a consumer's setup is asked of NATS: once, or under a retry policy. */
type Asking = <T>(what: string, request: () => Promise<T>) => Promise<T>;

function once<T>(_what: string, request: () => Promise<T>): Promise<T> {
  return request();
}
