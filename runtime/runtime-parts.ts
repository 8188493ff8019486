import { type JetStreamClient, type JetStreamManager, jetstream, jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import type { Logger } from "pino";
import { createAuditAnchorer } from "./audit/audit-anchorer";
import { type AuditSealer, startAuditSealer } from "./audit/audit-sealer";
import type { ResolvedConfig } from "./config";
import type { DatabaseClient } from "./db/client";
import { admitDebouncedJob } from "./flow/debounce";
import { debounceDependencies, type EnqueueApiOptions, enqueueCommittedKeyed } from "./flow/enqueue-api";
import { JOB_KEYS_BUCKET, openJobKeys } from "./flow/job-keys";
import { jobsById } from "./flow/jobs-by-id";
import { waitingJobFinder } from "./flow/waiting-jobs";
import { CANCEL_BUCKET, type Cancellations, openCancellations } from "./invocation/cancellation";
import { AUDIT_ANCHOR_STREAM, ensureAuditAnchorStream } from "./nats/audit-anchor-stream";
import { type ConsumerDefinitions, DEFINITIONS_BUCKET, openConsumerDefinitions } from "./nats/consumer-definitions";
import {
  type DelayedJobMover,
  delayedStreamName,
  ensureDelayedJobs,
  farStreamName,
  startDelayedJobMover,
} from "./nats/delayed-jobs";
import { EVENT_STREAM, ensureEventStream } from "./nats/event-stream";
import { openProgressBoard, type ProgressBoard } from "./nats/progress-board";
import { type UnrecordedJobFinder, unrecordedJobFinder } from "./nats/stored-job";
import { StreamPublisher } from "./nats/stream-publisher";
import { scaleUpStreams } from "./nats/stream-replicas";
import { ensureJobStream } from "./nats/streams";
import { PROGRESS_BUCKET } from "./nats/subjects";
import { untilAnswered } from "./nats/until-answered";
import { type OutboxRelay, startOutboxRelay } from "./outbox/outbox-relay";
import { JetfnError } from "./support/errors";
import { redactUrls } from "./support/logger";
import type { RuntimeEmitter } from "./triggers/events";
import { SCHEDULE_BUCKET, type Scheduler, startScheduler } from "./triggers/scheduler";

/** What a runtime is made of before it serves anything: connections and settings. */
export interface RuntimeBase {
  config: ResolvedConfig;
  logger: Logger;
  database: DatabaseClient;
  nats: NatsConnection;
  events: RuntimeEmitter;
}

/**
 * The shared parts a runtime opens on NATS and Postgres before it deploys its functions: every stream
 * and bucket, the publishers of jobs (outbox relay, scheduler, delayed-jobs mover) and the audit sealer.
 * The serving runtime is built from them, so nothing it uses can be missing.
 */
export interface RuntimeParts {
  manager: JetStreamManager;
  js: JetStreamClient;
  /** Publishes committed jobs and events (outbox) and scheduled jobs. */
  publisher: StreamPublisher;
  /** The stream delayed jobs wait in. */
  delayedStream: string;
  progress: ProgressBoard;
  cancellations: Cancellations;
  definitions: ConsumerDefinitions;
  /** Finds jobs the jobs stream holds that no runtime recorded yet (status, the enqueue API). */
  unrecordedJobs: UnrecordedJobFinder;
  /** What keyed enqueues (debounce, singletons) need; the enqueue API adds its reply guard. */
  keyedEnqueue: Omit<EnqueueApiOptions, "replyGuard">;
  outbox: OutboxRelay;
  scheduler: Scheduler;
  delayedJobs: DelayedJobMover;
  sealer: AuditSealer;
  /** Stops the publishers and watchers above, after the last invocation (the scheduler is stopped apart, first). */
  close(): Promise<void>;
}

/**
 * Opens the runtime's parts; if one fails, those already opened are closed before the error is
 * thrown. `signal` ends the retries of an unanswered step (startRuntime's, aborting the start).
 */
export async function openRuntimeParts(base: RuntimeBase, signal?: AbortSignal): Promise<RuntimeParts> {
  const { config, logger, nats } = base;
  const opened: Array<() => Promise<void> | void> = [];
  const closeOpened = async (): Promise<void> => {
    for (const close of opened.reverse()) {
      await Promise.resolve()
        .then(close)
        .catch((error: unknown) => logger.warn({ err: error }, "Closing a runtime part failed."));
    }
  };
  // Each step below is safe to repeat (it creates what is missing and opens what exists), so one
  // that NATS did not answer in time, a server slow while runtimes start on a loaded machine, is
  // asked again instead of failing the start.
  const answered = <T>(what: string, step: () => Promise<T>): Promise<T> =>
    untilAnswered(what, step, { logger, signal });
  try {
    const manager = await answered("the JetStream account info", () => jetstreamManager(nats)).catch(
      (error: unknown) => {
        // Only "no responders" means no JetStream; anything else (not answered in time, a refusal) is what it is.
        if ((error as Error).name !== "JetStreamNotEnabled") throw error;
        throw new JetfnError(
          "E_UNAVAILABLE",
          `the NATS server at ${redactUrls(config.natsUrl)} does not offer JetStream (${(error as Error).message}); start it with -js, or jetstream {} in its config`,
          { cause: error },
        );
      },
    );
    const js = jetstream(nats);
    const publisher = new StreamPublisher(nats);
    opened.push(() => publisher.close());
    const { replication } = config;
    const retention = { retentionMs: config.jobRetentionMs, duplicateWindowMs: config.duplicateWindowMs, replication };
    await answered(`the stream ${config.streamName}`, () =>
      ensureJobStream(manager, { name: config.streamName, ...retention }),
    );
    await answered(`the stream ${EVENT_STREAM}`, () =>
      ensureEventStream(manager, { name: EVENT_STREAM, ...retention }),
    );
    const delayedStream = await answered("the delayed-jobs streams and their consumers", () =>
      ensureDelayedJobs(manager, config.streamName, replication),
    );
    const progress = await answered(`the bucket ${PROGRESS_BUCKET}`, () =>
      openProgressBoard(nats, logger, replication),
    );
    const cancellations = await answered(`the bucket ${CANCEL_BUCKET} and its watch`, () =>
      openCancellations(nats, logger, replication),
    );
    opened.push(() => cancellations.close());
    const definitions = await answered(`the bucket ${DEFINITIONS_BUCKET}`, () =>
      openConsumerDefinitions(nats, logger, replication),
    );
    const unrecordedJobs = unrecordedJobFinder(nats, config.streamName);
    const keyedEnqueue: RuntimeParts["keyedEnqueue"] = {
      nc: nats,
      queueGroup: config.queueGroup,
      database: base.database,
      keys: await answered(`the bucket ${JOB_KEYS_BUCKET}`, () => openJobKeys(nats, replication)),
      publisher,
      manager,
      delayedStream,
      cancellations,
      logger,
      events: base.events,
      jobs: jobsById({
        manager,
        delayedStream,
        unrecorded: unrecordedJobs,
        waitingJob: waitingJobFinder(nats),
        database: base.database,
      }),
    };
    const outbox = await startOutboxRelay({
      sql: base.database.sql,
      js: publisher,
      events: base.events,
      logger,
      maxPayload: nats.info?.max_payload,
      keyed: (job) => enqueueCommittedKeyed(keyedEnqueue, job),
    });
    opened.push(() => outbox.close());
    const scheduler = await answered(`the bucket ${SCHEDULE_BUCKET} and the schedules' secret`, () =>
      startScheduler({ nc: nats, js: publisher, events: base.events, logger, replication }),
    );
    opened.push(() => scheduler.close());
    const delayedJobs = startDelayedJobMover({
      js,
      publisher,
      stream: delayedStream,
      logger,
      dropped: (id) => cancellations.cancelled(id) !== undefined,
      admitDebounced: (job) => admitDebouncedJob(debounceDependencies(keyedEnqueue), job),
    });
    opened.push(() => delayedJobs.stop());
    // Seals are anchored outside the database, where whoever controls it cannot rewrite them.
    await answered(`the stream ${AUDIT_ANCHOR_STREAM}`, () => ensureAuditAnchorStream(manager, replication));
    await answered("the replicas of every stream", () =>
      scaleUpStreams(manager, streamNames(config), replication, logger),
    );
    const anchorer = createAuditAnchorer({ sql: base.database.sql, js, manager, logger });
    const sealer = startAuditSealer(base.database.sql, logger, { anchorer });
    opened.push(() => sealer.close());
    return {
      manager,
      js,
      publisher,
      delayedStream,
      progress,
      cancellations,
      definitions,
      unrecordedJobs,
      keyedEnqueue,
      outbox,
      scheduler,
      delayedJobs,
      sealer,
      close: async () => {
        // The scheduler was stopped first, by the shutdown; the rest in the order opened, the relay first
        // (whatever the last invocation committed to the outbox is published or left for a sweep).
        await outbox.close().catch((error: unknown) => logger.warn({ err: error }, "Closing the relay failed."));
        await delayedJobs.stop();
        await cancellations.close();
        await sealer.close();
        publisher.close();
      },
    };
  } catch (error) {
    await closeOpened();
    throw error;
  }
}

/** Every stream jetfn creates, buckets as their `KV_<bucket>` streams. */
function streamNames(config: ResolvedConfig): string[] {
  return [
    config.streamName,
    delayedStreamName(config.streamName),
    farStreamName(delayedStreamName(config.streamName)),
    EVENT_STREAM,
    `KV_${PROGRESS_BUCKET}`,
    `KV_${CANCEL_BUCKET}`,
    `KV_${DEFINITIONS_BUCKET}`,
    `KV_${JOB_KEYS_BUCKET}`,
    `KV_${SCHEDULE_BUCKET}`,
    AUDIT_ANCHOR_STREAM,
  ];
}
