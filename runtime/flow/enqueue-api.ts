import type { JetStreamManager } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import type { Msg, NatsConnection, Subscription } from "@nats-io/transport-node";
import type { Logger } from "pino";
import type { DatabaseClient } from "../db/client";
import { describeInvalidName, isValidFunctionName } from "../deploy/function-name";
import { FUNCTION_HEADER, NOT_BEFORE_HEADER, parseNotBefore } from "../invocation/job-delay";
import { parseInputBody } from "../invocation/validation";
import { publishJob } from "../nats/publish-job";
import { replyError, replyJson, statusFor } from "../nats/reply";
import type { ReplyGuard } from "../nats/reply-guard";
import type { JetStreamPublisher } from "../nats/stream-publisher";
import { ID_HEADER, isReservedInvocationId, isValidInvocationId } from "../nats/subjects";
import { JetfnError, toJetfnError } from "../support/errors";
import { type DebounceDependencies, takeDebounceKey } from "./debounce";
import { checkDebouncePeriod, checkJobKey, DEBOUNCE_KEY_HEADER, SINGLETON_KEY_HEADER } from "./job-keys";
import { DEBOUNCE_PERIOD_HEADER, ENQUEUE_SUBJECT, type EnqueuedJob } from "./keyed-enqueue-request";
import { checkPriority, PRIORITY_HEADER } from "./priority";
import { enqueueSingleton } from "./singleton";

/**
 * Enqueue API answered by every runtime (`jetfn.api.enqueue`, see keyed-enqueue-request.ts), for
 * jobs with a debounce or singleton key: claiming a key needs the `JETFN_JOB_KEYS` bucket, which
 * clients cannot reach. Jobs without a key are published straight to the stream, as before.
 */
/** What the enqueue API needs from the runtime. */
export interface EnqueueApiOptions {
  nc: NatsConnection;
  queueGroup: string;
  database: DatabaseClient;
  keys: KV;
  publisher: JetStreamPublisher;
  manager: JetStreamManager;
  /** The delayed-jobs stream, where debounced jobs wait. */
  delayedStream: string;
  logger: Logger;
  replyGuard: ReplyGuard;
}

/** A parsed, checked request. */
interface KeyedEnqueueRequest {
  fn: string;
  id: string | undefined;
  input: unknown;
  priority: number;
  notBefore: number | undefined;
  singleton?: string;
  debounce?: { key: string; periodMs: number };
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
      inFlight++;
      void (async () => {
        try {
          const reply = await enqueueKeyed(options, parseRequest(message));
          replyJson(message, reply, nc.info?.max_payload ?? 1_048_576, reply.id);
        } catch (thrown) {
          const failure = toJetfnError(thrown);
          if (failure.code === "E_HANDLER_FAILED") logger.error({ err: thrown }, "A keyed enqueue failed.");
          replyError(message, statusFor(failure), failure);
        } finally {
          inFlight--;
        }
      })();
    },
  });
}

const busy = new JetfnError(
  "E_UNAVAILABLE",
  `this runtime is already working on ${MAX_KEYED_ENQUEUES_IN_FLIGHT} keyed (singleton or debounce) enqueues; try again shortly`,
);

async function enqueueKeyed(options: EnqueueApiOptions, request: KeyedEnqueueRequest): Promise<EnqueuedJob> {
  const id = request.id ?? crypto.randomUUID();
  const maxPayload = options.nc.info?.max_payload;
  const { fn, input, priority } = request;
  if (request.singleton !== undefined) {
    const job = { id, fn, key: request.singleton };
    return enqueueSingleton(
      options.keys,
      options.database,
      job,
      () =>
        publishJob(options.publisher, fn, input, {
          id,
          maxPayload,
          priority,
          notBefore: request.notBefore,
          headers: { [SINGLETON_KEY_HEADER]: request.singleton as string },
        }),
      options.logger,
    );
  }
  const debounce = request.debounce as { key: string; periodMs: number };
  const published = await publishJob(options.publisher, fn, input, {
    id,
    maxPayload,
    priority,
    notBefore: Date.now() + debounce.periodMs,
    headers: { [DEBOUNCE_KEY_HEADER]: debounce.key },
  });
  const supersededBy = await takeDebounceKey(debounceDependencies(options), {
    id,
    fn,
    key: debounce.key,
    seq: published.seq,
  });
  return supersededBy === undefined ? published : { ...published, supersededBy };
}

/** What debounce needs, from the API's options. */
export function debounceDependencies(
  options: Pick<EnqueueApiOptions, "keys" | "database" | "nc" | "manager" | "delayedStream" | "logger">,
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

function parseRequest(message: Msg): KeyedEnqueueRequest {
  const header = (name: string): string | undefined =>
    message.headers?.has(name) ? (message.headers.get(name) ?? "") : undefined;
  const fn = header(FUNCTION_HEADER) ?? "";
  if (!isValidFunctionName(fn)) throw new JetfnError("E_FUNCTION_NOT_FOUND", describeInvalidName(fn));
  const singleton = header(SINGLETON_KEY_HEADER);
  const debounceKey = header(DEBOUNCE_KEY_HEADER);
  if ((singleton === undefined) === (debounceKey === undefined)) {
    throw new JetfnError("E_INPUT_INVALID", "a keyed enqueue needs either a singleton key or a debounce key");
  }
  const notBefore = header(NOT_BEFORE_HEADER);
  const id = header(ID_HEADER) || undefined;
  // Checked before any key is claimed (publishJob checks it again).
  if (id !== undefined && (!isValidInvocationId(id) || isReservedInvocationId(id))) {
    throw new JetfnError(
      "E_INPUT_INVALID",
      `invocation id ${JSON.stringify(id.slice(0, 140))} must be 8-128 letters, digits, "-" or "_", not shaped like the ids jetfn derives itself`,
    );
  }
  const request: KeyedEnqueueRequest = {
    fn,
    id,
    input: parseInputBody(message.data, fn),
    priority: checkPriority(header(PRIORITY_HEADER) ?? 0),
    notBefore: notBefore === undefined ? undefined : checkNotBefore(notBefore),
  };
  if (singleton !== undefined) return { ...request, singleton: checkJobKey(singleton, "singleton") };
  if (request.notBefore !== undefined) {
    throw new JetfnError(
      "E_INPUT_INVALID",
      "a debounced job runs one period after its enqueue: give no delay or runAt",
    );
  }
  const period = header(DEBOUNCE_PERIOD_HEADER);
  const periodMs = checkDebouncePeriod(period !== undefined && /^[0-9]{1,12}$/.test(period) ? Number(period) : period);
  return { ...request, debounce: { key: checkJobKey(debounceKey, "debounce"), periodMs } };
}

function checkNotBefore(value: string): number {
  const due = parseNotBefore(value);
  if (due === undefined) throw new JetfnError("E_INPUT_INVALID", `${NOT_BEFORE_HEADER} must be epoch milliseconds`);
  return due;
}
