import { headers, type Msg, type NatsConnection } from "@nats-io/transport-node";
import { type RuntimeOptions, resolveConfig } from "../config";
import type { DeadLetter } from "../db/dead-letters";
import {
  ENQUEUE_SUBJECT,
  type EnqueuedJob,
  type FlowControlOptions,
  KEYED_ENQUEUE_TIMEOUT_MS,
  keyedEnqueueRequest,
  needsKeyedEnqueue,
} from "../flow/keyed-enqueue-request";
import { checkPriority } from "../flow/priority";
import { CANCEL_SUBJECT } from "../invocation/cancellation";
import { type DelayOptions, dueTime } from "../invocation/job-delay";
import { CallMux } from "../nats/call-mux";
import type { CancelReply } from "../nats/cancel-api";
import { connectNats } from "../nats/connection";
import {
  type DeadLetterList,
  DLQ_DROP_SUBJECT,
  DLQ_LIST_SUBJECT,
  DLQ_RETRY_SUBJECT,
  type DropReply,
  type RetriedJob,
  type RetryReply,
} from "../nats/dead-letter-api";
import { encodeInput, publishJob } from "../nats/publish-job";
import type { ErrorReplyBody } from "../nats/reply";
import type { InvocationStatusView } from "../nats/status-api";
import { StreamPublisher } from "../nats/stream-publisher";
import { callSubject, doneSubject, ERROR_CODE_HEADER, ID_HEADER, STATUS_SUBJECT } from "../nats/subjects";
import { eventMessage, publishMessage } from "../outbox/outbox-message";
import { type Duration, parseDuration } from "../support/duration";
import { isJetfnErrorCode } from "../support/error-codes";
import { JetfnError, type ValidationIssue } from "../support/errors";
import type { EventDataOf, EventDefinition } from "./define-event";
import type { FunctionDefinition, InputOf, OutputOf } from "./define-function";

/**
 * Map of function names to definitions, for typed calls. Augment it (or pass your own map as the
 * client's type parameter) to have `tsc` check names and inputs.
 */
export type FunctionMap = Record<string, FunctionDefinition>;

type NameOf<M> = keyof M & string;
type ClientInput<M, N extends string> = M extends Record<N, FunctionDefinition> ? InputOf<M[N]> : unknown;
type ClientOutput<M, N extends string> = M extends Record<N, FunctionDefinition> ? OutputOf<M[N]> : unknown;

/**
 * How a client reaches the runtimes. The NATS credentials default to the same environment
 * variables as the runtime's ([configuration](../docs/configuration.md)).
 */
export interface ClientOptions
  extends Pick<
    RuntimeOptions,
    | "natsUser"
    | "natsPassword"
    | "natsToken"
    | "natsCredsFile"
    | "natsNkeyFile"
    | "natsCaFile"
    | "natsCertFile"
    | "natsKeyFile"
  > {
  /** @default process.env.NATS_URL ?? "nats://127.0.0.1:4222" */
  natsUrl?: string;
  /** Reuse a connection instead of opening one (it is not closed by `close()`). */
  connection?: NatsConnection;
  /** Default wait for `call` and `result`. @default "30s" */
  timeout?: Duration;
}

/** Options of one call. */
export interface CallOptions {
  timeout?: Duration;
  /** Invocation id for this call (its audit rows carry it); random when omitted. */
  id?: string;
}

/** Options of one enqueue. */
export interface EnqueueJobOptions extends DelayOptions, FlowControlOptions {
  /** Invocation id; random when omitted. Repeating an id within the duplicate window enqueues once. */
  id?: string;
}

/** Options of one emit. */
export interface EmitOptions {
  /** Event id (its `Nats-Msg-Id`); random when omitted. Repeating an id within the duplicate window emits once. */
  id?: string;
}

/** A stored event: its id and where JetStream put it. */
export interface EmittedEvent {
  id: string;
  seq: number;
  duplicate: boolean;
}

/** Options of waiting for a job. */
export interface ResultOptions {
  /** How long to wait for the job to finish. @default the client's timeout */
  timeout?: Duration;
  /**
   * The function the job was enqueued for: if the id belongs to another function's job, E_ID_CONFLICT
   * is thrown instead of that job's result. @default any function
   */
  function?: string;
}

/** Options of a cancel. */
export interface CancelOptions {
  /** Why, kept with the job (its error message) and given to a running handler's `ctx.signal`. */
  reason?: string;
}

/** Options of a status request. */
export interface StatusOptions {
  /** The function the id is expected to belong to (E_ID_CONFLICT otherwise). @default any function */
  function?: string;
  /**
   * For a job no runtime has started yet (`pending`): look for it in the jobs stream, to show its
   * function, priority and keys. That reads the stream's backlog, so a loop polling the status may
   * pass false (as `result()` does).
   * @default true
   */
  stream?: boolean;
  /**
   * List the invocation's durable steps (`steps` in the answer; results left out). An answer that
   * would not fit in one NATS message comes without them. @default false
   */
  steps?: boolean;
}

/** Talks to jetfn runtimes over NATS: calls, jobs, results and status. */
export interface JetfnClient<M = FunctionMap> {
  readonly connection: NatsConnection;
  /** Request-reply: runs `name` now and returns its result, or throws its error. */
  call<N extends NameOf<M>>(name: N, input: ClientInput<M, N>, options?: CallOptions): Promise<ClientOutput<M, N>>;
  /**
   * Fire-and-forget: stores a job and returns its id once JetStream has it. With `singleton`, the
   * id may be the job already holding the key (`existing: true`); with `debounce`, the job waits
   * one period and runs unless a later one of its key supersedes it.
   */
  enqueue<N extends NameOf<M>>(name: N, input: ClientInput<M, N>, options?: EnqueueJobOptions): Promise<EnqueuedJob>;
  /** Waits for a job's result; throws the job's error if it ends dead. The job keeps going if this gives up. */
  result(id: string, options?: ResultOptions): Promise<unknown>;
  /** Durable request-reply: enqueue, then wait for the result. */
  enqueueAndWait<N extends NameOf<M>>(
    name: N,
    input: ClientInput<M, N>,
    options?: EnqueueJobOptions & ResultOptions,
  ): Promise<ClientOutput<M, N>>;
  /** Status, attempts, progress, result or errors of an invocation. */
  status(id: string, options?: StatusOptions): Promise<InvocationStatusView>;
  /**
   * Cancels a job: one not started never runs, a running one is aborted (`ctx.signal`) and rolled
   * back; it ends `cancelled`. E_NOT_CANCELLABLE when it already ended.
   */
  cancel(id: string, options?: CancelOptions): Promise<CancelReply>;
  /**
   * Emits an event to every function listening on it; resolves once JetStream stored it. Checked
   * against the event's `defineEvent` schema (E_INPUT_INVALID otherwise).
   * @example await client.emit(commentCreated, { postId: 1, commentId: 7 });
   */
  emit<E extends string | EventDefinition>(
    event: E,
    data: EventDataOf<E>,
    options?: EmitOptions,
  ): Promise<EmittedEvent>;
  /** Dead jobs not yet retried, newest first (what `jetfn dlq` lists). */
  deadLetters(options?: DeadLetterQuery): Promise<DeadLetter[]>;
  /**
   * Runs a dead job again: one that recorded durable steps is resumed under its id (its committed
   * steps answer from their memos, its failed steps are tried again), unless `fresh`; any other
   * starts as a fresh job linked to it. Refused with E_NOT_DEAD unless the job is dead.
   */
  retryDeadLetter(id: string, options?: RetryDeadLetterOptions): Promise<RetriedJob>;
  /** Runs every dead job of a function again, as retryDeadLetter does each. */
  retryDeadLetters(fn: string, options?: RetryDeadLetterOptions): Promise<RetriedJob[]>;
  /** Discards a dead job: its status becomes `dropped`, with when. */
  dropDeadLetter(id: string): Promise<DropReply>;
  close(): Promise<void>;
}

/** Which dead jobs to list. */
export interface DeadLetterQuery {
  /** Only this function's. @default every function */
  function?: string;
  /** At most this many (1-1000). @default 100 */
  limit?: number;
}

/** How dead jobs are run again. */
export interface RetryDeadLetterOptions {
  /** Start a job that recorded durable steps afresh, as a new job whose steps all run again. @default false: resume it */
  fresh?: boolean;
}

export const DEFAULT_CLIENT_TIMEOUT: Duration = "30s";
/** Statuses of a job that ended without a result: `result()` throws the job's error. */
const ENDED_UNSUCCESSFULLY = new Set(["dead", "dropped", "cancelled", "superseded"]);
/** While waiting for a result, the status is also polled this often, in case a notice was missed. */
const RESULT_POLL_MS = 2_000;

/**
 * Connects a client.
 * @example
 * const client = await createClient();
 * const { sent } = await client.call("send-mail", { to: ["a@example.com"], subject: "Hi" });
 */
export async function createClient<M = FunctionMap>(options: ClientOptions = {}): Promise<JetfnClient<M>> {
  const config = resolveConfig({
    natsUrl: options.natsUrl,
    natsUser: options.natsUser,
    natsPassword: options.natsPassword,
    natsToken: options.natsToken,
    natsCredsFile: options.natsCredsFile,
    natsNkeyFile: options.natsNkeyFile,
    natsCaFile: options.natsCaFile,
    natsCertFile: options.natsCertFile,
    natsKeyFile: options.natsKeyFile,
  });
  const connection =
    options.connection ??
    (await connectNats({
      url: config.natsUrl,
      auth: config.natsAuth,
      name: "jetfn-client",
    }));
  return new NatsClient<M>(connection, !options.connection, parseDuration(options.timeout ?? DEFAULT_CLIENT_TIMEOUT));
}

class NatsClient<M> implements JetfnClient<M> {
  readonly connection: NatsConnection;
  readonly #owned: boolean;
  readonly #timeoutMs: number;
  readonly #calls: CallMux;
  readonly #publisher: StreamPublisher;

  constructor(connection: NatsConnection, owned: boolean, timeoutMs: number) {
    this.connection = connection;
    this.#owned = owned;
    this.#timeoutMs = timeoutMs;
    this.#calls = new CallMux(connection);
    this.#publisher = new StreamPublisher(connection);
  }

  async call<N extends NameOf<M>>(
    name: N,
    input: ClientInput<M, N>,
    options: CallOptions = {},
  ): Promise<ClientOutput<M, N>> {
    const timeout = options.timeout === undefined ? this.#timeoutMs : parseDuration(options.timeout);
    const body = encodeInput(input, name, this.connection.info?.max_payload);
    let reply: Msg;
    try {
      const header = headers();
      if (options.id) header.set(ID_HEADER, options.id);
      reply = await this.#calls.request(callSubject(name), body, { timeoutMs: timeout, headers: header });
    } catch (error) {
      throw requestFailure(error, `call ${name}`, timeout);
    }
    return decodeReply(reply) as ClientOutput<M, N>;
  }

  async enqueue<N extends NameOf<M>>(
    name: N,
    input: ClientInput<M, N>,
    options: EnqueueJobOptions = {},
  ): Promise<EnqueuedJob> {
    const notBefore = dueTime(options);
    if (needsKeyedEnqueue(options)) {
      const maxPayload = this.connection.info?.max_payload;
      const request = keyedEnqueueRequest(name, input, { ...options, notBefore }, maxPayload);
      let reply: Msg;
      try {
        reply = await this.connection.request(ENQUEUE_SUBJECT, request.body, {
          timeout: KEYED_ENQUEUE_TIMEOUT_MS,
          headers: request.headers,
        });
      } catch (error) {
        throw requestFailure(error, `enqueue ${name}`, KEYED_ENQUEUE_TIMEOUT_MS, keyedEnqueueUnanswered(options.id));
      }
      return decodeReply(reply) as EnqueuedJob;
    }
    return publishJob(this.#publisher, name, input, {
      id: options.id,
      maxPayload: this.connection.info?.max_payload,
      notBefore,
      priority: options.priority === undefined ? undefined : checkPriority(options.priority),
    });
  }

  async enqueueAndWait<N extends NameOf<M>>(
    name: N,
    input: ClientInput<M, N>,
    options: EnqueueJobOptions & ResultOptions = {},
  ): Promise<ClientOutput<M, N>> {
    const { id } = await this.enqueue(name, input, options);
    return (await this.result(id, { ...options, function: name })) as ClientOutput<M, N>;
  }

  async emit<E extends string | EventDefinition>(
    event: E,
    data: EventDataOf<E>,
    options: EmitOptions = {},
  ): Promise<EmittedEvent> {
    const message = eventMessage(event, data, options.id, this.connection.info?.max_payload);
    const ack = await publishMessage(this.#publisher, message);
    return { id: message.id, seq: ack.seq, duplicate: ack.duplicate };
  }

  async result(id: string, options: ResultOptions = {}): Promise<unknown> {
    const timeout = options.timeout === undefined ? this.#timeoutMs : parseDuration(options.timeout);
    // Subscribe before asking for the status, so a job finishing in between is not missed.
    const notices = this.connection.subscribe(doneSubject(id), { max: 1 });
    const notified = notices[Symbol.asyncIterator]().next();
    let noticed = false;
    void notified.then(() => {
      noticed = true;
    });
    const deadline = Date.now() + timeout;
    try {
      for (;;) {
        // A runtime whose Postgres restarts answers E_DATABASE_UNAVAILABLE for a moment, or not within
        // the poll's 5 s: the job is held, not failed, so the wait goes on until its own deadline.
        const view = await this.status(id, { function: options.function, stream: false }).catch(
          unlessDatabaseComingBack,
        );
        if (view instanceof JetfnError) {
          if (Date.now() >= deadline) throw view;
        } else if (view.status === "succeeded") {
          return view.result;
        } else if (ENDED_UNSUCCESSFULLY.has(view.status)) {
          throw deadJobError(view);
        }
        const left = deadline - Date.now();
        if (left <= 0) {
          throw new JetfnError(
            "E_HANDLER_TIMEOUT",
            `job ${id} did not finish within ${timeout}ms; it keeps running, ask again later`,
          );
        }
        await (noticed ? sleep(Math.min(left, 100)) : Promise.race([notified, sleep(Math.min(left, RESULT_POLL_MS))]));
      }
    } finally {
      notices.unsubscribe();
    }
  }

  async status(id: string, options: StatusOptions = {}): Promise<InvocationStatusView> {
    if (!options.steps) return this.#status(id, options);
    try {
      return await this.#status(id, options);
    } catch (error) {
      // A large input and result beside up to 1,000 steps: the status alone still fits.
      if ((error as { code?: unknown }).code !== "E_PAYLOAD_TOO_LARGE") throw error;
      return this.#status(id, { ...options, steps: false });
    }
  }

  async #status(id: string, options: StatusOptions): Promise<InvocationStatusView> {
    let reply: Msg;
    try {
      const body = JSON.stringify({
        id,
        function: options.function,
        stream: options.stream ?? true,
        steps: options.steps || undefined,
      });
      reply = await this.connection.request(STATUS_SUBJECT, body, { timeout: 5_000 });
    } catch (error) {
      throw requestFailure(error, "status", 5_000);
    }
    return decodeReply(reply) as InvocationStatusView;
  }

  async cancel(id: string, options: CancelOptions = {}): Promise<CancelReply> {
    return (await this.#request(CANCEL_SUBJECT, { id, reason: options.reason }, "cancel", 5_000)) as CancelReply;
  }

  async deadLetters(options: DeadLetterQuery = {}): Promise<DeadLetter[]> {
    const reply = await this.#request(DLQ_LIST_SUBJECT, options, "dlq", 5_000);
    return (reply as DeadLetterList).deadLetters;
  }

  async retryDeadLetter(id: string, options: RetryDeadLetterOptions = {}): Promise<RetriedJob> {
    const reply = (await this.#request(DLQ_RETRY_SUBJECT, { id, ...options }, "retry", 5_000)) as RetryReply;
    return reply.retried[0] as RetriedJob;
  }

  async retryDeadLetters(fn: string, options: RetryDeadLetterOptions = {}): Promise<RetriedJob[]> {
    const reply = await this.#request(DLQ_RETRY_SUBJECT, { function: fn, all: true, ...options }, "retry", 60_000);
    return (reply as RetryReply).retried;
  }

  async dropDeadLetter(id: string): Promise<DropReply> {
    return (await this.#request(DLQ_DROP_SUBJECT, { id }, "dlq drop", 5_000)) as DropReply;
  }

  async close(): Promise<void> {
    this.#calls.close();
    this.#publisher.close();
    if (this.#owned) await this.connection.drain();
  }

  /** A JSON request to the runtimes' API; error replies are thrown as JetfnErrors. */
  async #request(subject: string, body: unknown, what: string, timeoutMs: number): Promise<unknown> {
    let reply: Msg;
    try {
      reply = await this.connection.request(subject, JSON.stringify(body), { timeout: timeoutMs });
    } catch (error) {
      throw requestFailure(error, what, timeoutMs);
    }
    return decodeReply(reply);
  }
}

/** An error reply from a runtime, as thrown by the client. */
export interface CallErrorDetails {
  status: number;
  invocationId: string | undefined;
}

function decodeReply(reply: Msg): unknown {
  const status = reply.headers?.get(ERROR_CODE_HEADER);
  const text = new TextDecoder().decode(reply.data);
  if (!status) return text === "" ? null : JSON.parse(text);
  let body: ErrorReplyBody | undefined;
  try {
    body = JSON.parse(text) as ErrorReplyBody;
  } catch {
    body = undefined;
  }
  const code = body?.error?.code;
  const error = new JetfnError(isJetfnErrorCode(code) ? code : "E_HANDLER_FAILED", body?.error?.message ?? text, {
    issues: body?.error?.issues as ValidationIssue[] | undefined,
  });
  Object.assign(error, { status: Number(status), invocationId: reply.headers?.get(ID_HEADER) || undefined });
  throw error;
}

/** A status reply saying Postgres is unreachable, returned to be asked again; anything else is thrown. */
/** A status poll's failure that result() waits through: Postgres away, or a reply slower than the poll. */
function unlessDatabaseComingBack(error: unknown): JetfnError {
  if (error instanceof JetfnError && (error.code === "E_DATABASE_UNAVAILABLE" || error.code === "E_HANDLER_TIMEOUT"))
    return error;
  throw error;
}

function deadJobError(view: InvocationStatusView): JetfnError {
  const last = view.error as { code?: string; message?: string } | undefined;
  const code = last?.code && isJetfnErrorCode(last.code) ? last.code : "E_HANDLER_FAILED";
  const error = new JetfnError(code, `job ${view.id} is ${view.status}: ${last?.message ?? "no error recorded"}`);
  Object.assign(error, { invocationId: view.id });
  return error;
}

/**
 * What a keyed enqueue that got no answer may have done, and how to find out. The runtime answers by
 * its own deadline (flow/enqueue-deadline.ts), well before this; no answer at all means the request
 * or its answer was lost, or the runtime stopped: the job may or may not be stored.
 */
function keyedEnqueueUnanswered(id: string | undefined): string {
  return id === undefined
    ? "the enqueue's outcome is unknown: the job may or may not have been enqueued, and with no id of your own it cannot be looked up (give an id to check with `jetfn status <id>`, and to enqueue again safely)"
    : `the enqueue's outcome is unknown: the job may or may not have been enqueued; check with \`jetfn status ${id}\` (client.status), or enqueue it again with id ${JSON.stringify(id)}, which is answered with the job if it was (a singleton folded into the job holding its key stores nothing under its own id)`;
}

/** The JetfnError of a request to the runtimes that failed; `afterTimeout` adds to a timeout's message. */
function requestFailure(error: unknown, what: string, timeoutMs: number, afterTimeout?: string): JetfnError {
  const name = (error as { name?: string }).name ?? "";
  const message = (error as Error).message ?? String(error);
  if (name === "NoRespondersError" || /no responders/i.test(message)) {
    return new JetfnError(
      "E_UNAVAILABLE",
      `${what}: no jetfn runtime is listening (is \`jetfn dev\` or \`jetfn start\` running?)`,
      {
        cause: error,
      },
    );
  }
  if (name === "TimeoutError" || /timeout/i.test(message)) {
    const text = `${what}: no reply within ${timeoutMs}ms${afterTimeout ? `; ${afterTimeout}` : ""}`;
    return new JetfnError("E_HANDLER_TIMEOUT", text, { cause: error });
  }
  return new JetfnError("E_UNAVAILABLE", `${what}: ${message}`, { cause: error });
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
