import type { JetStreamManager } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import type { Msg, NatsConnection, Subscription } from "@nats-io/transport-node";
import type { Logger } from "pino";
import type { DatabaseClient } from "../db/client";
import { ownerOf } from "../db/invocation-store";
import { describeInvalidName, isValidFunctionName } from "../deploy/function-name";
import type { Cancellations } from "../invocation/cancellation";
import { FUNCTION_HEADER, NOT_BEFORE_HEADER, parseNotBefore } from "../invocation/job-delay";
import { parseInputBody } from "../invocation/validation";
import { replyApiFailure } from "../nats/api-failure";
import { type PublishJobOptions, publishEncodedJob } from "../nats/publish-job";
import { replyError, replyJson, statusFor } from "../nats/reply";
import type { ReplyGuard } from "../nats/reply-guard";
import type { JetStreamPublisher } from "../nats/stream-publisher";
import { ID_HEADER, isReservedInvocationId, isValidInvocationId } from "../nats/subjects";
import { JetfnError } from "../support/errors";
import type { RuntimeEmitter } from "../triggers/events";
import { type ChosenIdJob, checkChosenId, type JobsById, type JobUnderId, refuseDuplicate } from "./chosen-id";
import { type DebounceDependencies, debounceDueTime, MIN_DEBOUNCE_DELAY_MS, takeDebounceKey } from "./debounce";
import { type DeadlineRun, type EnqueueSteps, runWithinDeadline, UNBOUNDED_STEPS } from "./enqueue-deadline";
import { DEBOUNCE_KEY_HEADER, SINGLETON_KEY_HEADER } from "./job-keys";
import { ENQUEUE_SUBJECT, type EnqueuedJob, type JobKeyRequest, readKeyHeaders } from "./keyed-enqueue-request";
import { checkPriority, PRIORITY_HEADER } from "./priority";
import { enqueueSingleton } from "./singleton";
import { endNeverEnqueued } from "./superseded-record";

/**
 * Enqueue API answered by every runtime (`jetfn.api.enqueue`, see keyed-enqueue-request.ts), for
 * jobs with a debounce or singleton key: claiming a key needs the `JETFN_JOB_KEYS` bucket, which
 * clients cannot reach. Jobs without a key are published straight to the stream, as before.
 */
/** What a keyed enqueue needs from the runtime. */
export interface KeyedEnqueueParts {
  nc: NatsConnection;
  database: DatabaseClient;
  keys: KV;
  publisher: JetStreamPublisher;
  manager: JetStreamManager;
  /** The delayed-jobs stream, where debounced jobs wait. */
  delayedStream: string;
  /** Cancel marks: a queued singleton holder cancelled before it ran holds its key no longer. */
  cancellations: Pick<Cancellations, "cancelled">;
  logger: Logger;
}

/** What the enqueue API needs from the runtime. */
export interface EnqueueApiOptions extends KeyedEnqueueParts {
  queueGroup: string;
  replyGuard: ReplyGuard;
  /** Where jobs are found by id, to refuse a chosen id that is another job's (see chosen-id.ts). */
  jobs: JobsById;
  /** Where an enqueue answered at its deadline reports, once its work has ended (`enqueue:overran`). */
  events: RuntimeEmitter;
}

/**
 * A keyed enqueue, checked: what the enqueue API reads from a request, and the outbox relay from a
 * keyed row (see outbox-message.ts `keyedJobOf`).
 */
export interface KeyedEnqueue extends JobKeyRequest {
  fn: string;
  id: string;
  /** The input, as JSON (published as it is). */
  body: Uint8Array;
  priority: number;
  notBefore: number | undefined;
}

/**
 * Keyed enqueues one runtime works on at once. Each costs key-value round trips and a Postgres
 * lookup; past this many, a flood of requests would hold the database pool that jobs need, so
 * further requests are refused at once with E_UNAVAILABLE (the client may try again).
 */
export const MAX_KEYED_ENQUEUES_IN_FLIGHT = 64;
/** At most one warning about refused requests per this long. */
const REFUSAL_LOG_INTERVAL_MS = 10_000;

/** Starts answering `jetfn.api.enqueue`. */
export function startEnqueueApi(options: EnqueueApiOptions): Subscription {
  const { nc, replyGuard, logger } = options;
  let inFlight = 0;
  let refused = 0;
  let lastRefusalLog = 0;
  const uncheckedWarning = { at: 0 };
  return nc.subscribe(ENQUEUE_SUBJECT, {
    queue: options.queueGroup,
    callback: (error, message) => {
      if (error || !message.reply || !replyGuard.accepts(message, "enqueue")) return;
      if (inFlight >= MAX_KEYED_ENQUEUES_IN_FLIGHT) {
        refused++;
        if (Date.now() - lastRefusalLog >= REFUSAL_LOG_INTERVAL_MS) {
          lastRefusalLog = Date.now();
          logger.warn({ refused, inFlight }, "Refusing keyed enqueues: too many in flight on this runtime.");
          refused = 0;
        }
        replyError(message, statusFor(busy), busy);
        return;
      }
      // Counted until its work ends, which may be after the deadline answered.
      inFlight++;
      void answerEnqueue(options, message, uncheckedWarning).finally(() => {
        inFlight--;
      });
    },
  });
}

/** Answers one keyed enqueue, by its deadline at the latest (see enqueue-deadline.ts); never throws. */
async function answerEnqueue(options: EnqueueApiOptions, message: Msg, warning: { at: number }): Promise<void> {
  const { nc, logger } = options;
  let request: KeyedEnqueue;
  let run: DeadlineRun;
  try {
    const parsed = parseRequest(message);
    request = { ...parsed, id: parsed.id ?? crypto.randomUUID() };
    const job = request;
    run = runWithinDeadline({ fn: job.fn, id: job.id, logger }, (steps) =>
      parsed.id === undefined
        ? enqueueKeyed(options, job, undefined, steps)
        : enqueueChosenId(options, job, warning, steps),
    );
  } catch (thrown) {
    replyApiFailure(message, thrown, "enqueue", logger);
    return;
  }
  try {
    const reply = await run.answer;
    replyJson(message, reply, nc.info?.max_payload ?? 1_048_576, reply.id);
  } catch (thrown) {
    // An answer that the job may be stored names it, so the caller can look it up.
    const maybeStored = (thrown as { code?: unknown }).code === "E_HANDLER_TIMEOUT";
    replyApiFailure(message, thrown, "enqueue", logger, maybeStored ? request.id : undefined);
  }
  const { overran, answered, outcome } = await run.done;
  if (!overran) return;
  const overrun = { fn: request.fn, invocationId: request.id, answered, outcome };
  logger.warn(overrun, "A keyed enqueue was answered at its deadline; its work has ended.");
  options.events.emit("enqueue:overran", overrun);
}

const busy = new JetfnError(
  "E_UNAVAILABLE",
  `this runtime is already working on ${MAX_KEYED_ENQUEUES_IN_FLIGHT} keyed (singleton or debounce) enqueues; try again shortly`,
);

/**
 * A keyed enqueue whose client chose the id: refused (E_ID_CONFLICT) when the id is another job's,
 * before anything is claimed or stored, and when the publish finds another job's message under it;
 * answered with the job when this same job was enqueued already (a repeat). The outbox relay does
 * not come here: its rows' ids were chosen by the runtime or by function code, and a row relayed
 * again after a crash is the same job (see `enqueueCommittedKeyed`).
 */
async function enqueueChosenId(
  options: EnqueueApiOptions,
  request: KeyedEnqueue,
  warning: { at: number },
  steps: EnqueueSteps,
): Promise<EnqueuedJob> {
  const job = chosenIdJob(request);
  const { complete, same } = await checkChosenId(options.jobs, job);
  if (same) return alreadyEnqueued(request, same);
  if (!complete && Date.now() - warning.at >= REFUSAL_LOG_INTERVAL_MS) {
    warning.at = Date.now();
    options.logger.warn(
      { fn: job.fn, invocationId: job.id },
      "A keyed enqueue's chosen id was checked against every job but those queued in the jobs stream: it holds too many unrecorded jobs to read them all.",
    );
  }
  return enqueueKeyed(options, request, (stored) => refuseDuplicate(options.manager, stored, job), steps);
}

/**
 * The answer to a repeat of a keyed enqueue whose job exists: nothing is claimed or stored (a
 * singleton's answer says `existing`, as when its claim names the job).
 */
function alreadyEnqueued(request: KeyedEnqueue, found: Pick<JobUnderId, "seq">): EnqueuedJob {
  const job = { id: request.id, seq: found.seq ?? 0, duplicate: true };
  return request.singleton === undefined ? job : { ...job, existing: true };
}

function chosenIdJob(request: KeyedEnqueue): ChosenIdJob {
  const { id, fn } = request;
  if (request.singleton !== undefined) return { id, fn, kind: "singleton", key: request.singleton };
  if (request.debounce !== undefined) return { id, fn, kind: "debounce", key: request.debounce.key };
  throw new JetfnError("E_INPUT_INVALID", "a keyed enqueue needs a key");
}

/**
 * Enqueues a job with a singleton or debounce key: claims the key in `JETFN_JOB_KEYS` and publishes
 * the job (or folds it into the singleton's holder, or has it superseded at once by a later job of
 * its debounce key). The enqueue API and the outbox relay both enqueue keyed jobs here.
 */
export async function enqueueKeyed(
  parts: KeyedEnqueueParts,
  request: KeyedEnqueue,
  /** Called when the publish was a duplicate (see PublishJobOptions); may refuse it. */
  onDuplicate?: PublishJobOptions["onDuplicate"],
  /** Where its steps report, to answer by a deadline (see enqueue-deadline.ts). */
  steps: EnqueueSteps = UNBOUNDED_STEPS,
): Promise<EnqueuedJob> {
  const { fn, id, body, priority } = request;
  const maxPayload = parts.nc.info?.max_payload;
  if (request.singleton !== undefined) {
    const key = request.singleton;
    const job = await enqueueSingleton(
      parts.keys,
      parts.database,
      { id, fn, key },
      async (again) => {
        if (!again) steps.beforePublish();
        const published = await publishEncodedJob(parts.publisher, fn, body, {
          id,
          maxPayload,
          priority,
          notBefore: request.notBefore,
          headers: { [SINGLETON_KEY_HEADER]: key },
          onDuplicate,
        });
        if (!again) steps.stored({ ...published, existing: false });
        return published;
      },
      parts.logger,
      (holder) => parts.cancellations.cancelled(holder) !== undefined,
      () => steps.beforeWrite(),
    );
    steps.stored(job);
    return job;
  }
  if (request.debounce === undefined) throw new JetfnError("E_INPUT_INVALID", "a keyed enqueue needs a key");
  const { key, periodMs, maxWaitMs } = request.debounce;
  const enqueuedAt = Date.now();
  const due = await debounceDueTime(parts.keys, { fn, key, periodMs, maxWaitMs }, enqueuedAt);
  // Taken just before the publish, so the job goes to the delayed-jobs stream (see MIN_DEBOUNCE_DELAY_MS).
  const notBefore = Math.max(due, Date.now() + MIN_DEBOUNCE_DELAY_MS);
  steps.beforePublish();
  const published = await publishEncodedJob(parts.publisher, fn, body, {
    id,
    maxPayload,
    priority,
    notBefore,
    headers: { [DEBOUNCE_KEY_HEADER]: key },
    onDuplicate,
  });
  steps.stored(published);
  // A repeat: the job was stored before, and may have moved and run since while a later job of its
  // key took the claim: taking the key now would supersede it. The mover decides on it when it is
  // due, as on a job whose enqueue stopped before claiming.
  if (published.duplicate) return published;
  const supersededBy = await takeDebounceKey(debounceDependencies(parts), {
    id,
    fn,
    key,
    seq: published.seq,
    enqueuedAt,
    due: notBefore,
  });
  return supersededBy === undefined ? published : { ...published, supersededBy };
}

/**
 * Enqueues a keyed job whose transaction committed (an outbox row): as `enqueueKeyed`, and when a
 * singleton folds into the job holding its key, the row's own id, which `ctx.enqueue` already
 * returned, is recorded `superseded` with E_SINGLETON_HELD naming the holder, so its status and
 * `result()` say what became of it. A row whose job has a record already (the row was relayed
 * before, and its delete failed or the runtime stopped) is that job: nothing is claimed or stored.
 */
export async function enqueueCommittedKeyed(parts: KeyedEnqueueParts, request: KeyedEnqueue): Promise<EnqueuedJob> {
  // Past the stream's duplicate window a second copy would be stored: with a debounce key, it would
  // supersede the key's later job and run the row's old input again.
  if ((await ownerOf(parts.database.sql, request.id)) === request.fn) return alreadyEnqueued(request, {});
  const job = await enqueueKeyed(parts, request);
  if (request.singleton !== undefined && job.existing && job.id !== request.id) {
    const held = { id: request.id, fn: request.fn };
    if (await endNeverEnqueued(parts.database.sql, parts.nc, held, job.id, request.singleton)) {
      parts.logger.info(
        { fn: request.fn, invocationId: request.id, holder: job.id },
        "Singleton job from the outbox not enqueued: its key is held.",
      );
    }
  }
  return job;
}

/** What debounce needs, from the API's options. */
export function debounceDependencies(
  options: Pick<KeyedEnqueueParts, "keys" | "database" | "nc" | "manager" | "delayedStream" | "logger">,
): DebounceDependencies {
  return {
    keys: options.keys,
    sql: options.database.sql,
    nc: options.nc,
    removeDelayed: async (seq) => {
      await options.manager.streams.deleteMessage(options.delayedStream, seq, false);
    },
    delayedStreamCreated: async () => Date.parse((await options.manager.streams.info(options.delayedStream)).created),
    logger: options.logger,
  };
}

function parseRequest(message: Msg): Omit<KeyedEnqueue, "id"> & { id: string | undefined } {
  const header = (name: string): string | undefined =>
    message.headers?.has(name) ? (message.headers.get(name) ?? "") : undefined;
  const fn = header(FUNCTION_HEADER) ?? "";
  if (!isValidFunctionName(fn)) throw new JetfnError("E_FUNCTION_NOT_FOUND", describeInvalidName(fn));
  const notBefore = header(NOT_BEFORE_HEADER);
  const id = header(ID_HEADER) || undefined;
  // Checked before any key is claimed (publishing checks it again).
  if (id !== undefined && (!isValidInvocationId(id) || isReservedInvocationId(id))) {
    throw new JetfnError(
      "E_INPUT_INVALID",
      `invocation id ${JSON.stringify(id.slice(0, 140))} must be 8-128 letters, digits, "-" or "_", not shaped like the ids jetfn derives itself`,
    );
  }
  const due = notBefore === undefined ? undefined : checkNotBefore(notBefore);
  const keys = readKeyHeaders(header, due);
  if (keys === undefined) {
    throw new JetfnError("E_INPUT_INVALID", "a keyed enqueue needs either a singleton key or a debounce key");
  }
  parseInputBody(message.data, fn);
  return {
    fn,
    id,
    body: message.data,
    priority: checkPriority(header(PRIORITY_HEADER) ?? 0),
    notBefore: due,
    ...keys,
  };
}

function checkNotBefore(value: string): number {
  const due = parseNotBefore(value);
  if (due === undefined) throw new JetfnError("E_INPUT_INVALID", `${NOT_BEFORE_HEADER} must be epoch milliseconds`);
  return due;
}
