import {
  AckPolicy,
  type ConsumerUpdateConfig,
  DeliverPolicy,
  DiscardPolicy,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
  RetentionPolicy,
  StorageType,
} from "@nats-io/jetstream";
import { type MsgHdrs, headers as natsHeaders } from "@nats-io/transport-node";
import type { Logger } from "pino";
import { isValidFunctionName } from "../deploy/function-name";
import { type FlowLabels, flowLabelsOf, keyHeadersOf } from "../flow/flow-labels";
import { checkJobKey, DEBOUNCE_KEY_HEADER, MAX_KEY_LENGTH } from "../flow/job-keys";
import { PRIORITY_HEADER, routePriority } from "../flow/priority";
import {
  DELAYED_PREFIX,
  delayedSubject,
  FUNCTION_HEADER,
  NOT_BEFORE_HEADER,
  parseNotBefore,
} from "../invocation/job-delay";
import { RESUME_HEADER, resumeMessageId } from "../invocation/resume-tag";
import { toNanos } from "../support/duration";
import { consumerInfo } from "./consumer-lookup";
import { type ParkingReader, type PublishSlots, readParkingConsumer } from "./parking-reader";
import type { JetStreamPublisher } from "./stream-publisher";
import { addStreamIfMissing, type Replication, SINGLE_REPLICA } from "./stream-replicas";
import { ID_HEADER, isValidInvocationId, jobMessageId, RETRY_OF_HEADER } from "./subjects";

/** The delayed-jobs stream of a jobs stream: `JETFN_JOBS` -> `JETFN_JOBS_DELAYED`. */
export function delayedStreamName(jobStream: string): string {
  return `${jobStream}_DELAYED`;
}

/** The far-future delayed jobs of a delayed-jobs stream: `JETFN_JOBS_DELAYED` -> `JETFN_JOBS_DELAYED_FAR`. */
export function farStreamName(delayedStream: string): string {
  return `${delayedStream}_FAR`;
}

/**
 * Subject prefix of far-future jobs, `jetfn.delayed-far.<id>`: outside `jetfn.delayed.>`, so the
 * client account (which may publish to `jetfn.delayed.>`) cannot publish there.
 */
export const FAR_PREFIX = "jetfn.delayed-far.";

/** The one durable consumer every runtime shares to move due jobs. */
const DELAYED_CONSUMER = "jetfn-delayed";
/** The one durable consumer every runtime shares to bring far-future jobs back when they near. */
const FAR_CONSUMER = "jetfn-delayed-far";

/**
 * Jobs due within this wait in the delayed-jobs stream; later ones in the far stream, until they
 * are this close again. After a nats-server restart the server redelivers every parked message of
 * a consumer at once, and a due job waits behind the re-parking of all the others (about 5,000 a
 * second): the delayed-jobs consumer holds only the jobs due within this window, and the far
 * consumer's storm delays no due job as long as it is shorter than half of it: a far job comes
 * back half the window before it is due.
 */
export const NEAR_MS = 120_000;
/** Header of a moved job naming when it was first enqueued (epoch ms): status shows that, not the move. */
const ENQUEUED_AT_HEADER = "Jetfn-Enqueued-At";

/**
 * Longest a waiting job is put back for at once: it is looked at again (and put back again) at
 * least this often, so a clock step or a cancellation is noticed, and no server timer is days long.
 */
const MAX_PARK_MS = 3_600_000;
/** Wait before a job whose move failed (NATS unavailable) is tried again. */
const RETRY_MOVE_MS = 1_000;
/**
 * How long the server waits for a runtime's answer to a delayed message (parked, moved, dropped)
 * before it delivers it again. A runtime answers at once, or once its move is stored; an answer
 * lost to a nats-server restart (a message delivered just before it) or to a runtime that died
 * brings the job back only after this. At 30 s, jobs due 8 s after a restart moved 21 s late.
 * A message waiting in a runtime (a slow move) is kept alive (parking-reader.ts); one delivered
 * again anyway is published twice under one message id and stored once.
 */
const ANSWER_WAIT_MS = 2_000;

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
  await ensureParkingStream(manager, replication, {
    stream: name,
    subject: `${DELAYED_PREFIX}>`,
    description: "jetfn delayed jobs waiting for their due time, jetfn.delayed.<invocation id>",
    consumer: DELAYED_CONSUMER,
    consumerDescription: "moves delayed jobs to fn.job.<name> when due (shared by every runtime)",
  });
  await ensureParkingStream(manager, replication, {
    stream: farStreamName(name),
    subject: `${FAR_PREFIX}>`,
    description: "jetfn delayed jobs due in more than two minutes, jetfn.delayed-far.<invocation id>",
    consumer: FAR_CONSUMER,
    consumerDescription:
      "brings far-future delayed jobs back to jetfn.delayed.<id> when near (shared by every runtime)",
  });
  return name;
}

async function ensureParkingStream(
  manager: JetStreamManager,
  replication: Replication,
  parking: { stream: string; subject: string; description: string; consumer: string; consumerDescription: string },
): Promise<void> {
  await addStreamIfMissing(
    manager,
    {
      name: parking.stream,
      subjects: [parking.subject],
      description: parking.description,
      retention: RetentionPolicy.Workqueue,
      storage: StorageType.File,
      discard: DiscardPolicy.Old,
    },
    replication,
  );
  const settings: ConsumerUpdateConfig = {
    description: parking.consumerDescription,
    ack_wait: toNanos(ANSWER_WAIT_MS),
    max_deliver: -1,
    max_ack_pending: -1,
  };
  const consumer = await consumerInfo(manager, parking.stream, parking.consumer);
  if (!consumer) {
    await manager.consumers.add(parking.stream, {
      durable_name: parking.consumer,
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.All,
      ...settings,
    });
  } else if (consumer.config.ack_wait !== settings.ack_wait) {
    // Made by an earlier version (30 s): parked jobs keep their time, the wait applies from now.
    await manager.consumers.update(parking.stream, parking.consumer, settings);
  }
}

/** A delayed job as `status` shows it while it waits. */
export interface ScheduledJob {
  id: string;
  /** The stream it waits in: the delayed-jobs stream, or its far stream. */
  stream: string;
  /** Its sequence in that stream. */
  seq: number;
  fn: string;
  runAt: string;
  enqueuedAt: string;
  /** Its priority and debounce or singleton key, from its headers. */
  labels: FlowLabels;
  /** A sleeping job's resumption (its record says `sleeping`), not a job that never ran. */
  resumption?: true;
}

/**
 * The waiting delayed job with this id, if any: one lookup by subject in the delayed-jobs stream
 * (`stream`), and one in its far stream when not there.
 */
export async function findScheduledJob(
  manager: JetStreamManager,
  stream: string,
  id: string,
): Promise<ScheduledJob | undefined> {
  return (
    (await findIn(manager, stream, delayedSubject(id), id)) ??
    (await findIn(manager, farStreamName(stream), FAR_PREFIX + id, id))
  );
}

async function findIn(
  manager: JetStreamManager,
  stream: string,
  subject: string,
  id: string,
): Promise<ScheduledJob | undefined> {
  const stored = await manager.streams.getMessage(stream, { last_by_subj: subject }).catch(() => null);
  if (!stored) return undefined;
  const due = parseNotBefore(stored.header?.get(NOT_BEFORE_HEADER));
  const fn = stored.header?.get(FUNCTION_HEADER);
  if (due === undefined || !fn) return undefined;
  const enqueued = parseNotBefore(stored.header?.get(ENQUEUED_AT_HEADER)) ?? stored.time.getTime();
  return {
    id,
    stream,
    seq: stored.seq,
    fn,
    runAt: new Date(due).toISOString(),
    enqueuedAt: new Date(enqueued).toISOString(),
    labels: flowLabelsOf(stored.subject, stored.header),
    ...(stored.header?.has(RESUME_HEADER) ? { resumption: true as const } : {}),
  };
}

/** Removes a waiting delayed job (cancelled) from the stream it waits in. */
export async function removeScheduledJob(manager: JetStreamManager, job: ScheduledJob): Promise<void> {
  await manager.streams.deleteMessage(job.stream, job.seq, false);
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
  /** Jobs due later than this wait in the far stream (NEAR_MS; shorter in tests). */
  nearMs?: number;
}

/** Moves due delayed jobs to their function's subject; every runtime runs one. */
export interface DelayedJobMover {
  stop(): Promise<void>;
}

/**
 * Starts consuming the delayed-jobs stream, and its far stream: two consumers, read by two loops,
 * so a storm of far-future jobs redelivered after a nats-server restart never holds up a due one.
 */
export function startDelayedJobMover(options: DelayedJobMoverOptions): DelayedJobMover {
  const read = (stream: string, consumer: string, handler: typeof handle): ParkingReader =>
    readParkingConsumer({
      js: options.js,
      stream,
      consumer,
      logger: options.logger,
      handle: (message, publishing) => handler({ options, publishing }, message),
    });
  const near = read(options.stream, DELAYED_CONSUMER, handle);
  const far = read(farStreamName(options.stream), FAR_CONSUMER, handleFar);
  return {
    async stop() {
      await Promise.all([near.stop(), far.stop()]);
    },
  };
}

/** What handling one message works with: the mover's options, and its reader's publish slots. */
interface HandlerContext {
  options: DelayedJobMoverOptions;
  publishing: PublishSlots;
}

/** A delayed message's job, once its headers are checked. */
interface WaitingJob {
  id: string;
  fn: string;
  due: number;
}

/**
 * Reads and checks a delayed message's id, function and due time; terminates it (with an error
 * log) when one is not valid, and acks it when the job was cancelled. The subject names the id too
 * (status looks the job up by it): both must agree.
 */
function waitingJob(options: DelayedJobMoverOptions, message: JsMsg, prefix: string): WaitingJob | undefined {
  const id = message.headers?.get(ID_HEADER) ?? "";
  const fn = message.headers?.get(FUNCTION_HEADER) ?? "";
  const due = parseNotBefore(message.headers?.get(NOT_BEFORE_HEADER));
  const valid = isValidInvocationId(id) && message.subject === prefix + id && isValidFunctionName(fn);
  if (!valid || due === undefined) {
    options.logger.error(
      { subject: message.subject, seq: message.seq },
      "Dropped a delayed job without a valid id, function or due time.",
    );
    message.term();
    return undefined;
  }
  if (options.dropped?.(id, fn)) {
    message.ack();
    return undefined;
  }
  return { id, fn, due };
}

/**
 * A job of the delayed-jobs stream: parked until its due time (capped), or sent to the far stream
 * when due later than the near window (not a debounced one: its key's claim names it by its sequence here),
 * or published to its function and acked when due.
 */
async function handle(context: HandlerContext, message: JsMsg): Promise<void> {
  const { options } = context;
  const job = waitingJob(options, message, DELAYED_PREFIX);
  if (!job) return;
  const { id, fn, due } = job;
  const remaining = due - Date.now();
  if (remaining > (options.nearMs ?? NEAR_MS) && !message.headers?.has(DEBOUNCE_KEY_HEADER)) {
    // The far stream keeps its own message id per source message: a repeat after a crash is dropped.
    await relay(context, message, job, FAR_PREFIX + id, hopId("far", message, fn, id));
    return;
  }
  if (remaining > 0) {
    message.nak(Math.min(remaining, MAX_PARK_MS));
    return;
  }
  const key = debounceKey(options, message, fn, id);
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
  // A durable sleep's resumption (invocation/resume-tag.ts) keeps its header, and its own message id:
  // under the job's, a sleep shorter than the duplicate window would be dropped as a repeat of the job.
  const resume = message.headers?.get(RESUME_HEADER) || undefined;
  if (resume) header.set(RESUME_HEADER, resume);
  const subject = routePriority(fn, message.headers?.get(PRIORITY_HEADER) || undefined);
  // The move keeps the job's message id: a repeat (a crash between publish and ack) is dropped.
  const msgID = resume ? resumeMessageId(fn, id, resume) : jobMessageId(fn, id);
  await publishThenAck(context, message, subject, { msgID, headers: header }, (error) =>
    options.logger.warn({ err: error, fn, invocationId: id }, "Moving a due delayed job failed; trying again."),
  );
}

/**
 * The debounce key a delayed job carries, checked as the enqueue API checks it: clients may publish
 * to `jetfn.delayed.>` themselves, and a key that is too long (a claim subject over the server's
 * control-line limit closed the runtime's connection at every redelivery) or has wildcards must
 * never reach the keys bucket. A bad key is ignored: the job moves undebounced, as the job its
 * sender could have published to `fn.job.<name>`, and no other job's claim is touched.
 */
function debounceKey(options: DelayedJobMoverOptions, message: JsMsg, fn: string, id: string): string | undefined {
  const key = message.headers?.has(DEBOUNCE_KEY_HEADER) ? message.headers.get(DEBOUNCE_KEY_HEADER) : undefined;
  if (key === undefined) return undefined;
  try {
    return checkJobKey(key, "debounce");
  } catch {
    options.logger.warn(
      { fn, invocationId: id, keyLength: key.length, maxKeyLength: MAX_KEY_LENGTH },
      "A delayed job carries a debounce key the enqueue API would refuse; it moves undebounced.",
    );
    return undefined;
  }
}

/**
 * A job of the far stream: parked until half the near window before its due time (capped), then sent
 * back to `jetfn.delayed.<id>`, where the delayed-jobs consumer moves it when due.
 */
async function handleFar(context: HandlerContext, message: JsMsg): Promise<void> {
  const { options } = context;
  const job = waitingJob(options, message, FAR_PREFIX);
  if (!job) return;
  const remaining = job.due - Date.now();
  const near = options.nearMs ?? NEAR_MS;
  if (remaining > near) {
    message.nak(Math.min(remaining - near / 2, MAX_PARK_MS));
    return;
  }
  await relay(context, message, job, delayedSubject(job.id), hopId("near", message, job.fn, job.id));
}

/**
 * The message id of a waiting job's move to the other parking stream: per source message, so a repeat
 * after a crash is dropped. A resumption's is its own unguessable id (clients may publish to
 * `jetfn.delayed.>`: one that took the id first would make the move a duplicate, and the job never wake).
 */
function hopId(hop: "far" | "near", message: JsMsg, fn: string, id: string): string {
  const resume = message.headers?.get(RESUME_HEADER) || undefined;
  return `${hop}:${resume ? resumeMessageId(fn, id, resume) : `${fn}:${id}`}:${message.seq}`;
}

/**
 * Publishes a waiting job to `subject` (the other parking stream) with the headers the mover reads,
 * and acks it here once stored; on failure it is looked at again in a second.
 */
function relay(
  context: HandlerContext,
  message: JsMsg,
  job: WaitingJob,
  subject: string,
  msgID: string,
): Promise<void> {
  const header = natsHeaders();
  header.set(ID_HEADER, job.id);
  header.set(FUNCTION_HEADER, job.fn);
  header.set(NOT_BEFORE_HEADER, String(job.due));
  for (const name of [PRIORITY_HEADER, RETRY_OF_HEADER, RESUME_HEADER]) {
    const value = message.headers?.get(name);
    if (value) header.set(name, value);
  }
  for (const [name, value] of keyHeadersOf(message.headers)) header.set(name, value);
  const enqueued =
    parseNotBefore(message.headers?.get(ENQUEUED_AT_HEADER)) ?? Math.floor(message.info.timestampNanos / 1e6);
  header.set(ENQUEUED_AT_HEADER, String(enqueued));
  return publishThenAck(context, message, subject, { msgID, headers: header }, (error) =>
    context.options.logger.warn(
      { err: error, fn: job.fn, invocationId: job.id, subject },
      "Moving a waiting delayed job failed; trying again.",
    ),
  );
}

/**
 * Publishes a delayed message's job to `subject` and acks the message once JetStream stored it,
 * or naks it to be looked at again in a second. Resolves once the publish is sent, after waiting
 * for one of the loop's publish slots: the loop reads no further while every slot waits for an ack.
 */
async function publishThenAck(
  context: HandlerContext,
  message: JsMsg,
  subject: string,
  publish: { msgID: string; headers: MsgHdrs },
  failed: (error: unknown) => void,
): Promise<void> {
  const release = await context.publishing.take(message);
  void context.options.publisher.publish(subject, message.data, publish).then(
    () => {
      release();
      message.ack();
    },
    (error: unknown) => {
      release();
      failed(error);
      message.nak(RETRY_MOVE_MS);
    },
  );
}
