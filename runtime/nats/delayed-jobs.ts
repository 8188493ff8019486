import {
  AckPolicy,
  type ConsumerMessages,
  DeliverPolicy,
  DiscardPolicy,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
  RetentionPolicy,
  StorageType,
} from "@nats-io/jetstream";
import { headers as natsHeaders } from "@nats-io/transport-node";
import type { Logger } from "pino";
import { isValidFunctionName } from "../deploy/function-name";
import { type FlowLabels, flowLabelsOf, keyHeadersOf } from "../flow/flow-labels";
import { DEBOUNCE_KEY_HEADER } from "../flow/job-keys";
import { PRIORITY_HEADER, routePriority } from "../flow/priority";
import {
  DELAYED_PREFIX,
  delayedSubject,
  FUNCTION_HEADER,
  NOT_BEFORE_HEADER,
  parseNotBefore,
} from "../invocation/job-delay";
import { toNanos } from "../support/duration";
import type { JetStreamPublisher } from "./stream-publisher";
import { addStreamIfMissing, type Replication, SINGLE_REPLICA } from "./stream-replicas";
import { ID_HEADER, isValidInvocationId, jobMessageId, RETRY_OF_HEADER } from "./subjects";

/** The delayed-jobs stream of a jobs stream: `JETFN_JOBS` -> `JETFN_JOBS_DELAYED`. */
export function delayedStreamName(jobStream: string): string {
  return `${jobStream}_DELAYED`;
}

/** The one durable consumer every runtime shares to move due jobs. */
const DELAYED_CONSUMER = "jetfn-delayed";

/**
 * Longest a waiting job is put back for at once: it is looked at again (and put back again) at
 * least this often, so a clock step or a cancellation is noticed, and no server timer is days long.
 */
const MAX_PARK_MS = 3_600_000;
/** Wait before a job whose move failed (NATS unavailable) is tried again. */
const RETRY_MOVE_MS = 1_000;
/** Messages one runtime holds at once: each is parked or moved at once, so memory stays flat. */
const BATCH = 256;

/**
 * Creates the delayed-jobs stream and its consumer. Work-queue retention: a job leaves the stream
 * once moved. Unlimited deliveries and acks pending: every waiting job stays parked on the server
 * (a nak with a delay), however many wait and however long, without holding runtime memory.
 */
export async function ensureDelayedJobs(
  manager: JetStreamManager,
  jobStream: string,
  replication: Replication = SINGLE_REPLICA,
): Promise<string> {
  const name = delayedStreamName(jobStream);
  await addStreamIfMissing(
    manager,
    {
      name,
      subjects: [`${DELAYED_PREFIX}>`],
      description: "jetfn delayed jobs waiting for their due time, jetfn.delayed.<invocation id>",
      retention: RetentionPolicy.Workqueue,
      storage: StorageType.File,
      discard: DiscardPolicy.Old,
    },
    replication,
  );
  const consumer = await manager.consumers.info(name, DELAYED_CONSUMER).catch(() => undefined);
  if (!consumer) {
    await manager.consumers.add(name, {
      durable_name: DELAYED_CONSUMER,
      description: "moves delayed jobs to fn.job.<name> when due (shared by every runtime)",
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.All,
      ack_wait: toNanos(30_000),
      max_deliver: -1,
      max_ack_pending: -1,
    });
  }
  return name;
}

/** A delayed job as `status` shows it while it waits. */
export interface ScheduledJob {
  id: string;
  /** Its sequence in the delayed-jobs stream. */
  seq: number;
  fn: string;
  runAt: string;
  enqueuedAt: string;
  /** Its priority and debounce or singleton key, from its headers. */
  labels: FlowLabels;
}

/** The waiting delayed job with this id, if any (one lookup on the server, by subject). */
export async function findScheduledJob(
  manager: JetStreamManager,
  stream: string,
  id: string,
): Promise<ScheduledJob | undefined> {
  const stored = await manager.streams.getMessage(stream, { last_by_subj: delayedSubject(id) }).catch(() => null);
  if (!stored) return undefined;
  const due = parseNotBefore(stored.header?.get(NOT_BEFORE_HEADER));
  const fn = stored.header?.get(FUNCTION_HEADER);
  if (due === undefined || !fn) return undefined;
  return {
    id,
    seq: stored.seq,
    fn,
    runAt: new Date(due).toISOString(),
    enqueuedAt: stored.time.toISOString(),
    labels: flowLabelsOf(stored.subject, stored.header),
  };
}

/** Removes a waiting delayed job (cancelled) from the stream. */
export async function removeScheduledJob(manager: JetStreamManager, stream: string, job: ScheduledJob): Promise<void> {
  await manager.streams.deleteMessage(stream, job.seq, false);
}

/** What the mover needs from the runtime. */
export interface DelayedJobMoverOptions {
  js: JetStreamClient;
  publisher: JetStreamPublisher;
  stream: string;
  logger: Logger;
  /** True when the job must not run any more (cancelled); it is dropped instead of moved. */
  dropped?: (id: string, fn: string) => boolean;
  /**
   * Asked before a due job that carries a debounce key moves: false drops it (a later job of its
   * key superseded it; see flow/debounce.ts).
   */
  admitDebounced?: (job: { id: string; fn: string; key: string; seq: number }) => Promise<boolean>;
}

/** Moves due delayed jobs to their function's subject; every runtime runs one. */
export interface DelayedJobMover {
  stop(): Promise<void>;
}

/** Starts consuming the delayed-jobs stream. */
export function startDelayedJobMover(options: DelayedJobMoverOptions): DelayedJobMover {
  let messages: ConsumerMessages | undefined;
  let stopping = false;
  const loop = (async () => {
    while (!stopping) {
      try {
        const consumer = await options.js.consumers.get(options.stream, DELAYED_CONSUMER);
        messages = await consumer.consume({ max_messages: BATCH });
        if (stopping) messages.stop();
        for await (const message of messages) await handle(options, message);
      } catch (error) {
        if (stopping) break;
        options.logger.warn({ err: error }, "Reading delayed jobs failed; trying again in a second.");
        await new Promise((resolve) => setTimeout(resolve, RETRY_MOVE_MS));
      }
    }
  })();
  return {
    async stop() {
      stopping = true;
      messages?.stop();
      await loop;
    },
  };
}

/** Parks a job until its due time (capped), or publishes it to its function and acks it. */
async function handle(options: DelayedJobMoverOptions, message: JsMsg): Promise<void> {
  const id = message.headers?.get(ID_HEADER) ?? "";
  const fn = message.headers?.get(FUNCTION_HEADER) ?? "";
  const due = parseNotBefore(message.headers?.get(NOT_BEFORE_HEADER));
  // The subject names the id too (status looks the job up by it): both must agree.
  const valid = isValidInvocationId(id) && message.subject === delayedSubject(id) && isValidFunctionName(fn);
  if (!valid || due === undefined) {
    options.logger.error(
      { subject: message.subject, seq: message.seq },
      "Dropped a delayed job without a valid id, function or due time.",
    );
    message.term();
    return;
  }
  if (options.dropped?.(id, fn)) {
    message.ack();
    return;
  }
  const remaining = due - Date.now();
  if (remaining > 0) {
    message.nak(Math.min(remaining, MAX_PARK_MS));
    return;
  }
  const key = message.headers?.get(DEBOUNCE_KEY_HEADER);
  if (key && options.admitDebounced) {
    let admitted: boolean;
    try {
      admitted = await options.admitDebounced({ id, fn, key, seq: message.seq });
    } catch (error) {
      options.logger.warn({ err: error, fn, invocationId: id }, "Could not check a debounced job's key; trying again.");
      message.nak(RETRY_MOVE_MS);
      return;
    }
    if (!admitted) {
      message.ack();
      return;
    }
  }
  const header = natsHeaders();
  header.set(ID_HEADER, id);
  const retryOf = message.headers?.get(RETRY_OF_HEADER);
  if (retryOf) header.set(RETRY_OF_HEADER, retryOf);
  // So that status can still show the job's key once it is queued or running.
  for (const [name, value] of keyHeadersOf(message.headers)) header.set(name, value);
  const subject = routePriority(fn, message.headers?.get(PRIORITY_HEADER) || undefined);
  // The move keeps the job's message id: a repeat (a crash between publish and ack) is dropped.
  void options.publisher.publish(subject, message.data, { msgID: jobMessageId(fn, id), headers: header }).then(
    () => message.ack(),
    (error: unknown) => {
      options.logger.warn({ err: error, fn, invocationId: id }, "Moving a due delayed job failed; trying again.");
      message.nak(RETRY_MOVE_MS);
    },
  );
}
