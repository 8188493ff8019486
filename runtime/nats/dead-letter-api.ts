import { randomUUID } from "node:crypto";
import type { Msg, NatsConnection, Subscription } from "@nats-io/transport-node";
import type { Logger } from "pino";
import type { Sql } from "postgres";
import {
  claimDeadLetter,
  type DeadLetter,
  deadLetterIds,
  dropDeadLetter,
  listDeadLetters,
  NOT_REOPENED_CODE,
  type ResumableDeadLetter,
  refusal,
  releaseDeadLetter,
  reopenStatement,
  resumableDeadLetter,
} from "../db/dead-letters";
import { commitWith } from "../db/invocation-transaction";
import { outboxStatement } from "../db/outbox";
import { isValidFunctionName } from "../deploy/function-name";
import { reopenToken } from "../invocation/resume-tag";
import { type OutboxMessage, resumptionMessage } from "../outbox/outbox-message";
import { JetfnError, toJetfnError } from "../support/errors";
import { replyApiFailure } from "./api-failure";
import { publishJob } from "./publish-job";
import { replyJson } from "./reply";
import type { ReplyGuard } from "./reply-guard";
import type { JetStreamPublisher } from "./stream-publisher";
import { isValidInvocationId } from "./subjects";

/** Lists dead jobs: request `{"function"?: "...", "limit"?: n}`, reply `{"deadLetters": [...]}`. */
export const DLQ_LIST_SUBJECT = "jetfn.api.dlq.list";
/**
 * Retries dead jobs: request `{"id": "..."}` or `{"function": "...", "all": true}`, and `"fresh": true`
 * to start a job that recorded steps afresh instead of resuming it; reply `{"retried": [...]}`.
 */
export const DLQ_RETRY_SUBJECT = "jetfn.api.dlq.retry";
/** Drops a dead job: request `{"id": "..."}`, reply `{"id": "...", "droppedAt": "..."}`. */
export const DLQ_DROP_SUBJECT = "jetfn.api.dlq.drop";

/** One dead job run again: as a fresh job, or resumed from its durable steps under its own id. */
export interface RetriedJob {
  /** The dead job. */
  id: string;
  /** The new job (its `retryOf` is `id`); `id` itself when it was resumed. */
  newId: string;
  function: string;
  /** It recorded durable steps and was reopened under its id: its next run replays them, trying its failed steps again. */
  resumed?: boolean;
}

/** Reply of `jetfn.api.dlq.list`. */
export interface DeadLetterList {
  deadLetters: DeadLetter[];
}

/** Reply of `jetfn.api.dlq.retry`. */
export interface RetryReply {
  retried: RetriedJob[];
}

/** Reply of `jetfn.api.dlq.drop`. */
export interface DropReply {
  id: string;
  droppedAt: string;
}

/** What the dead-letter API needs from the runtime. */
export interface DeadLetterApiOptions {
  nc: NatsConnection;
  /** Publishes to JetStream and waits for the stored acknowledgement. */
  js: JetStreamPublisher;
  sql: Sql;
  queueGroup: string;
  logger: Logger;
  /** Drops requests whose reply subject is not an inbox. */
  replyGuard: ReplyGuard;
  /** The runtimes' secret, which signs the resumption of a dead job resumed from its steps. */
  resumeSecret?: string;
  /** Publishes outbox rows just committed (the relay's sweep is the fallback). */
  publishCommitted?: (messages: OutboxMessage[], log: Logger) => Promise<void>;
}

/** The running dead-letter API. */
export interface DeadLetterApi {
  /** Stops taking requests; resolves once those being answered have replied. */
  close(): Promise<void>;
}

/** Most dead jobs one list request returns. */
const MAX_LIST_LIMIT = 1_000;

/** Answers the `jetfn.api.dlq.*` requests, so the CLI needs no database credentials. */
export function startDeadLetterApi(options: DeadLetterApiOptions): DeadLetterApi {
  const inFlight = new Set<Promise<void>>();
  const handlers: Record<string, (body: Record<string, unknown>) => Promise<unknown>> = {
    [DLQ_LIST_SUBJECT]: (body) => list(options, body),
    [DLQ_RETRY_SUBJECT]: (body) => retry(options, body),
    [DLQ_DROP_SUBJECT]: (body) => dropDeadLetter(options.sql, requireId(body)),
  };
  const subscriptions: Subscription[] = Object.entries(handlers).map(([subject, handle]) =>
    options.nc.subscribe(subject, {
      queue: options.queueGroup,
      callback: (error, message) => {
        if (error || !message.reply || !options.replyGuard.accepts(message, "dlq")) return;
        const answering = answer(options, message, handle);
        inFlight.add(answering);
        void answering.finally(() => inFlight.delete(answering));
      },
    }),
  );
  return {
    async close() {
      for (const subscription of subscriptions) subscription.unsubscribe();
      while (inFlight.size > 0) await Promise.allSettled([...inFlight]);
    },
  };
}

async function answer(
  options: DeadLetterApiOptions,
  message: Msg,
  handle: (body: Record<string, unknown>) => Promise<unknown>,
): Promise<void> {
  try {
    const reply = await handle(parseBody(message.data, message.subject));
    replyJson(message, reply, options.nc.info?.max_payload ?? 1_048_576);
  } catch (thrown) {
    replyApiFailure(message, thrown, "dead-letter", options.logger);
  }
}

async function list(options: DeadLetterApiOptions, body: Record<string, unknown>): Promise<DeadLetterList> {
  const fn = optionalFunction(body);
  const limit = body.limit === undefined ? undefined : Number(body.limit);
  if (limit !== undefined && (!Number.isInteger(limit) || limit < 1 || limit > MAX_LIST_LIMIT)) {
    throw new JetfnError("E_INPUT_INVALID", `limit must be an integer from 1 to ${MAX_LIST_LIMIT}`);
  }
  return { deadLetters: await listDeadLetters(options.sql, { fn, limit }) };
}

async function retry(options: DeadLetterApiOptions, body: Record<string, unknown>): Promise<RetryReply> {
  if (body.fresh !== undefined && typeof body.fresh !== "boolean") {
    throw new JetfnError("E_INPUT_INVALID", '"fresh" is true or false');
  }
  const fresh = body.fresh === true;
  if (body.all === true) {
    const fn = optionalFunction(body);
    if (fn === undefined) throw new JetfnError("E_INPUT_INVALID", "retrying all dead jobs needs a function name");
    const retried: RetriedJob[] = [];
    for (const id of await deadLetterIds(options.sql, fn)) {
      try {
        retried.push(await retryOne(options, id, fresh));
      } catch (error) {
        // Another retry or a drop got there first; the rest still go.
        if (toJetfnError(error).code !== "E_NOT_DEAD") throw error;
      }
    }
    return { retried };
  }
  return { retried: [await retryOne(options, requireId(body), fresh)] };
}

/**
 * A dead job that recorded durable steps is resumed from them under its id, unless `fresh`. Any
 * other is claimed, then published again as a new job; a failed publish releases the claim.
 */
async function retryOne(options: DeadLetterApiOptions, id: string, fresh: boolean): Promise<RetriedJob> {
  const resumable = fresh ? undefined : await resumableDeadLetter(options.sql, id);
  if (resumable) return resume(options, resumable);
  const newId = randomUUID();
  const claimed = await claimDeadLetter(options.sql, id, newId);
  try {
    // A job stored without input (empty body) is published without one again.
    await publishJob(options.js, claimed.function, claimed.input ?? undefined, {
      id: newId,
      retryOf: id,
      maxPayload: options.nc.info?.max_payload,
    });
  } catch (error) {
    await releaseDeadLetter(options.sql, id, newId);
    throw error;
  }
  options.logger.info({ fn: claimed.function, invocationId: newId, retryOf: id }, "Dead job retried as a new job.");
  return { id, newId, function: claimed.function };
}

/**
 * Reopens a dead job with steps and sends the resumption that runs it on (docs/durable-steps.md):
 * its steps that committed answer from their memos, its failed steps are tried again from attempt 1.
 */
async function resume(options: DeadLetterApiOptions, dead: ResumableDeadLetter): Promise<RetriedJob> {
  if (options.resumeSecret === undefined) {
    throw new JetfnError("E_INTERNAL", "this runtime has no resumption secret to resume a dead job with");
  }
  const token = reopenToken(dead.lastSeq, dead.resume);
  const resumption = resumptionMessage(options.resumeSecret, {
    fn: dead.function,
    id: dead.id,
    token,
    notBefore: Date.now(),
    priority: dead.priority,
  });
  const origin = { functionName: dead.function, invocationId: dead.id };
  try {
    await commitWith(options.sql, undefined, outboxStatement([resumption], origin, reopenStatement(dead, token)));
  } catch (error) {
    // Another retry reopened it first, or it changed since it was read.
    if ((error as { code?: unknown }).code === NOT_REOPENED_CODE) throw await refusal(options.sql, dead.id, "retried");
    throw error;
  }
  await options.publishCommitted?.([resumption], options.logger);
  options.logger.info(
    { fn: dead.function, invocationId: dead.id, resume: token },
    "Dead job resumed from its steps; its failed steps run again.",
  );
  return { id: dead.id, newId: dead.id, function: dead.function, resumed: true };
}

function parseBody(data: Uint8Array, subject: string): Record<string, unknown> {
  const text = new TextDecoder().decode(data);
  let body: unknown;
  try {
    body = text === "" ? {} : JSON.parse(text);
  } catch {
    throw new JetfnError("E_INPUT_INVALID", `a ${subject} request must be a JSON object`);
  }
  if (body === null || typeof body !== "object" || Array.isArray(body)) {
    throw new JetfnError("E_INPUT_INVALID", `a ${subject} request must be a JSON object`);
  }
  return body as Record<string, unknown>;
}

function requireId(body: Record<string, unknown>): string {
  const id = body.id;
  if (typeof id !== "string" || !isValidInvocationId(id)) {
    throw new JetfnError("E_INPUT_INVALID", "the request needs a job id (8-128 letters, digits, - or _)");
  }
  return id;
}

function optionalFunction(body: Record<string, unknown>): string | undefined {
  const fn = body.function;
  if (fn === undefined) return undefined;
  if (typeof fn !== "string" || !isValidFunctionName(fn)) {
    throw new JetfnError("E_INPUT_INVALID", `"${String(fn)}" is not a valid function name`);
  }
  return fn;
}
