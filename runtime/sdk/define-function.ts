import type { PostgresJsDatabase } from "drizzle-orm/postgres-js";
import type { Logger } from "pino";
import type { z } from "zod";
import {
  type ConcurrencyLimitOptions,
  type RateLimitOptions,
  type ResolvedFlow,
  resolveFlow,
} from "../flow/flow-options";
import type { DebounceOptions } from "../flow/keyed-enqueue-request";
import type { DelayOptions } from "../invocation/job-delay";
import { type ResolvedRetryPolicy, type RetryOptions, resolveRetryPolicy } from "../invocation/retry-policy";
import { type Duration, parseDuration } from "../support/duration";
import { JetfnError } from "../support/errors";
import { type CatchUpPolicy, type ResolvedSchedule, resolveSchedule, type ScheduleOption } from "../triggers/schedule";
import { type EventDefinition, isEventDefinition, isValidEventPattern } from "./define-event";

/**
 * What an app registers with jetfn, by declaration merging: `schema`, its drizzle schema module
 * (tables and relations), types `ctx.db`, so relational queries check. The runtime loads the same
 * module (JETFN_SCHEMA) for them to run.
 * @example
 * // in the schema module itself, or any file the app's tsconfig includes
 * declare module "jetfn" {
 *   interface Register {
 *     schema: typeof import("./schema");
 *   }
 * }
 */
// biome-ignore lint/suspicious/noEmptyInterface: apps add to it by declaration merging
export interface Register {}

/** The app's registered drizzle schema, or none. */
export type RegisteredSchema = Register extends { schema: infer S extends Record<string, unknown> }
  ? S
  : Record<string, never>;

/** Drizzle database bound to one invocation's transaction, typed with the app's registered schema. */
export type InvocationDatabase = PostgresJsDatabase<RegisteredSchema>;

/**
 * Options for `ctx.enqueue` and `ctx.call`: an id, when the job should run, and its flow control.
 * Everything takes effect only if the invocation commits: the outbox relay then publishes the job,
 * and for a singleton or debounce key claims the key first, as `client.enqueue` does.
 */
export interface EnqueueOptions extends DelayOptions {
  /** Invocation id to use instead of a random one (also the JetStream `Nats-Msg-Id`). */
  id?: string;
  /** 0 (the default) to 3: with a backlog, the function's jobs of a higher priority start first. @default 0 */
  priority?: number;
  /**
   * Of the jobs enqueued with this key within `period` of each other (by any handler, client or
   * runtime), only the last runs, one period after the relay published it; the earlier ones end
   * `superseded`. `maxWait` (at least the period) bounds how long a burst may put the run off.
   * Keys: 1-128 letters, digits or `_ - . : @ / + =`; period: 100 ms to 24 h. Not with `delay`/`runAt`.
   * @example await ctx.enqueue("search.reindex", { docId }, { debounce: { key: `doc:${docId}`, period: "5s", maxWait: "1m" } });
   */
  debounce?: DebounceOptions;
  /**
   * At most one job of the function with this key is queued or running. The returned id is the new
   * job's; if, when the transaction commits, another job holds the key, nothing is enqueued and that
   * id ends `superseded` with E_SINGLETON_HELD, whose message names the holder (`ctx.enqueue`
   * cannot wait for that answer).
   * @example await ctx.enqueue("reports.nightly", {}, { singleton: { key: "nightly" } });
   */
  singleton?: { key: string };
}

/** What a handler receives besides its input. */
export interface FunctionContext {
  /** Drizzle, inside this invocation's transaction: it commits with the job's record or rolls back. */
  readonly db: InvocationDatabase;
  /** Logger bound to `fn`, `invocationId` and `attempt`. */
  readonly log: Logger;
  /** This invocation's id (the job handle). */
  readonly invocationId: string;
  /** Attempt number, starting at 1. */
  readonly attempt: number;
  /** The function's deployed name, e.g. `billing.charge`. */
  readonly functionName: string;
  /** Fired when the invocation times out or the runtime shuts down. */
  readonly signal: AbortSignal;
  /**
   * Reports progress; visible to `jetfn status` and waiters while the job runs.
   * @example ctx.progress(i, items.length);
   */
  progress(done: number, total?: number): void;
  /**
   * Enqueues a job for another function; it is published only if this invocation commits.
   * @example await ctx.enqueue("send-mail", { to: ["a@example.com"], subject: "hi" });
   */
  enqueue(functionName: string, input: unknown, options?: EnqueueOptions): Promise<{ id: string }>;
  /**
   * Asynchronous call: enqueues a job for another function without waiting for its result
   * (published only if this invocation commits, like `enqueue`). Use the id to ask for the result.
   * @example const { id } = await ctx.call("billing.charge", { orderId });
   */
  call(functionName: string, input: unknown, options?: EnqueueOptions): Promise<{ id: string }>;
  /**
   * Emits an event to every function listening on it (`on`); published only if this invocation
   * commits. Validated against the event's `defineEvent` schema (E_INPUT_INVALID otherwise).
   * @example await ctx.emit(commentCreated, { postId, commentId });
   */
  emit<E extends string | EventDefinition>(
    event: E,
    data: E extends EventDefinition<infer S> ? z.input<S> : unknown,
  ): Promise<{ id: string }>;
  /**
   * A durable step (docs/durable-steps.md): runs `fn` once per job and returns its result as stored
   * JSON. Its writes through `step.db`, its `step.enqueue`/`step.emit` and its result commit in one
   * transaction of its own; a later run of the job (a retry, a redelivery after a crash) gets the
   * stored result without running `fn` again. Names are 1-100 printable characters without `#`; a
   * name called again in one run is `name#2`, `name#3`... Once a job calls a step, its `ctx.db`
   * works only inside steps. A step that throws is tried again on its own (`options.retry`, by
   * default the function's `retry`), in a later run, without spending the job's attempts; once it
   * has used its attempts (or threw NonRetryableError), `ctx.step` throws `E_STEP_FAILED` with the
   * step's last error as `cause`, in this run and every later one: catch it to compensate. In a call
   * (request-reply), `fn` runs at once, in the call's transaction, and its error is thrown as it is.
   * @example const charge = await ctx.step("charge", async ({ db }) => (await db.insert(charges).values(row).returning())[0]);
   * @example await ctx.step("notify", () => mailer.send(order), { retry: { attempts: 5, backoff: ["1s", "1m"] } });
   */
  step<T>(
    name: string,
    fn: (step: StepContext) => T | Promise<T>,
    options?: StepOptions,
  ): Promise<Jsonified<Awaited<T>>>;
  /**
   * A durable sleep (docs/durable-steps.md): ends this run, and the job carries on from here in a new
   * run once `duration` has passed (steps before it answer from their memos), across restarts of
   * every runtime. The job holds no slot, lease or connection meanwhile; its status is `sleeping`.
   * At most a year; a duration of 0 goes on at once. In jobs only.
   * @example await ctx.sleep("before-reminder", "3d");
   */
  sleep(name: string, duration: Duration): Promise<void>;
  /**
   * As `sleep`, until `time` (a Date, an ISO 8601 string or epoch milliseconds); a time past goes on at once.
   * @example await ctx.sleepUntil("renewal", subscription.renewsAt);
   */
  sleepUntil(name: string, time: Date | string | number): Promise<void>;
  /**
   * A durable wait (docs/durable-steps.md): ends this run until an event named `event` whose data
   * holds the `match` values at their dotted paths is emitted (or was, since the step before the
   * wait ended), or until `timeout` (required, at most a year); the job carries on from here in a
   * new run, with the event, or null after the timeout. One event may end many waits; each wait
   * takes one event. Anyone who may emit the event can end the wait: match on a value an outsider
   * cannot guess. The job holds no slot, lease or connection meanwhile; its status is `awaiting`.
   * In jobs only.
   * @example const shipped = await ctx.waitForEvent("shipment", { event: shipmentDispatched, match: { orderId }, timeout: "7d" });
   */
  waitForEvent<E extends string | EventDefinition>(
    name: string,
    options: { event: E; match?: Record<string, string | number | boolean | null>; timeout: Duration },
  ): Promise<WaitedEvent<E> | null>;
}

/** The event a durable wait took: its id, name, data (typed by its defineEvent) and when it was stored. */
export interface WaitedEvent<E extends string | EventDefinition = string> {
  id: string;
  name: string;
  data: E extends EventDefinition<infer S> ? z.output<S> : unknown;
  /** When the events stream stored it (ISO 8601). */
  time: string;
}

/**
 * What a durable step's `fn` gets: `ctx`'s tools, over the step's own transaction. `db` commits
 * with the step's result; `enqueue`, `call` and `emit` are published only if the step commits (in a
 * job; in a call, with the call); `log` is also bound to the step's key.
 */
export interface StepContext
  extends Pick<FunctionContext, "db" | "log" | "signal" | "progress" | "enqueue" | "call" | "emit"> {
  /** The step's attempt, from 1: how many times it has been tried, this time included (1 in a call). */
  readonly attempt: number;
}

/** What `ctx.step` takes besides its name and `fn`. */
export interface StepOptions {
  /**
   * How often the step is tried, and how long to wait between its attempts. Given, it stands alone:
   * a field left out takes the usual default (3 attempts, backoff 1s, 10s, 1m), not the function's.
   * @default the function's `retry`
   */
  retry?: RetryOptions;
}

/** A value as it comes back from JSON: what a step returns, in every run alike. */
export type Jsonified<T> = T extends string | number | boolean | null
  ? T
  : T extends undefined
    ? null
    : T extends { toJSON(): infer J }
      ? Jsonified<J>
      : T extends readonly (infer U)[]
        ? Jsonified<U>[]
        : T extends object
          ? { [K in keyof T as T[K] extends (...args: never[]) => unknown ? never : K]: Jsonified<T[K]> }
          : never;

/** The options a function file passes to `defineFunction`. */
export interface FunctionSpec<Input extends z.ZodType, Output extends z.ZodType | undefined> {
  /** Schema of the input; the handler receives the parsed value. */
  input: Input;
  /** Schema of the result, checked before it is returned or stored. */
  output?: Output;
  /** Retry policy for jobs. @default { attempts: 3, backoff: ["1s", "10s", "1m"] } */
  retry?: RetryOptions;
  /** Longest an attempt may run before it is aborted. @default "30s" */
  timeout?: Duration;
  /** Invocations of this function running at once in one runtime process. @default 8 */
  concurrency?: number;
  /**
   * Jobs running at once across every runtime, for the function or per key (docs/flow-control.md).
   * @example concurrencyLimit: { limit: 2, key: (input) => input.tenantId }
   */
  concurrencyLimit?: ConcurrencyLimitOptions<z.output<Input>>;
  /**
   * Job starts per period across every runtime, for the function or per key; jobs over it wait.
   * @example rateLimit: { limit: 10, period: "1s" }
   */
  rateLimit?: RateLimitOptions<z.output<Input>>;
  /** One line shown by `jetfn ls` and service discovery. */
  description?: string;
  /**
   * Runs the function on a cron schedule (5 fields), optionally in a time zone.
   * @example schedule: "30 8 * * *"  // or { cron: "30 8 * * *", timezone: "Europe/Paris" }
   */
  schedule?: ScheduleOption;
  /** Runs the function at a fixed interval, aligned to the epoch (`"5m"`: at :00, :05, ...). */
  every?: Duration;
  /** What to do with due times missed while no runtime ran. @default "latest" */
  catchUp?: CatchUpPolicy;
  /** The input of scheduled jobs. @default nothing (or `{}` if the input schema needs an object) */
  scheduleInput?: z.input<Input>;
  /**
   * Subscribes the function to events: an event name, or a pattern with `*` (one segment) or a
   * trailing `>` (any number of segments). Each listener gets its own copy of every event.
   * @example on: "comment.created"
   */
  on?: string | EventDefinition;
  /** Where a listener deployed for the first time starts: new events only, or every event kept. @default "new" */
  onFrom?: "new" | "all";
  /**
   * Where the handler runs. `"none"`: on the runtime's event loop, the cheapest. `"thread"`: in a
   * worker thread of its own (a pool of `concurrency` threads per runtime), so a handler that spins
   * or calls `process.exit` costs only its own attempt: at the timeout the thread is terminated even
   * if it never yields, and an exit fails the attempt with E_HANDLER_EXITED. `ctx.db` queries, logs,
   * progress and `enqueue`/`call`/`emit` are relayed to the runtime, which keeps the transaction;
   * input and result cross by structured clone. Costs a few hundred microseconds per invocation and
   * tens of MB per thread (RELIABILITY.md, "Misbehaving handlers").
   * @default "none"
   * @example isolation: "thread"
   */
  isolation?: Isolation;
  /**
   * Whether this function's jobs may share a transaction and its COMMIT with other jobs (group
   * commit; each job in its own savepoint, its SET LOCALs undone for the next). Turn it off for
   * jobs that rely on transaction-scoped state ending with their own job: temporary tables created
   * `ON COMMIT DROP` and transaction-level advisory locks last until the group's COMMIT.
   * @default true
   */
  sharedCommit?: boolean;
  handler(input: z.output<Input>, ctx: FunctionContext): Promise<Output extends z.ZodType ? z.input<Output> : unknown>;
}

/** Where a handler runs: on the runtime's event loop, or in a worker thread of its own. */
export type Isolation = "none" | "thread";

/** Marker carried by every definition; a string so copies of the runtime recognise each other. */
export const FUNCTION_KIND = "jetfn.function";

/** What `defineFunction` returns: the spec, tagged so the loader can recognise it. */
export interface FunctionDefinition<
  Input extends z.ZodType = z.ZodType,
  Output extends z.ZodType | undefined = z.ZodType | undefined,
> {
  readonly kind: typeof FUNCTION_KIND;
  readonly spec: FunctionSpec<Input, Output>;
}

/** Input type of a function definition, as callers write it. */
export type InputOf<F> = F extends FunctionDefinition<infer I, z.ZodType | undefined> ? z.input<I> : never;

/** Result type of a function definition, as callers receive it. */
export type OutputOf<F> =
  F extends FunctionDefinition<z.ZodType, infer O> ? (O extends z.ZodType ? z.output<O> : unknown) : never;

/**
 * Declares a function. The default export of a file under `functions/`.
 * @example
 * export default defineFunction({
 *   input: z.object({ n: z.number().int() }),
 *   async handler({ n }) { return { square: n * n }; },
 * });
 */
export function defineFunction<Input extends z.ZodType, Output extends z.ZodType | undefined = undefined>(
  spec: FunctionSpec<Input, Output>,
): FunctionDefinition<Input, Output> {
  return Object.freeze({ kind: FUNCTION_KIND, spec });
}

/** True when `value` looks like something `defineFunction` returned (by shape, not identity). */
export function isFunctionDefinition(value: unknown): value is FunctionDefinition {
  return (
    typeof value === "object" &&
    value !== null &&
    (value as { kind?: unknown }).kind === FUNCTION_KIND &&
    typeof (value as { spec?: unknown }).spec === "object"
  );
}

/** A definition checked at deploy time, with every option resolved. */
export interface ResolvedFunction {
  readonly name: string;
  readonly file: string;
  /** Changes on every deploy of the same name; in-flight invocations keep the version they started on. */
  readonly version: number;
  /**
   * When the definition was written, in ms since the epoch: the newest modification time of its file
   * and the local files it imports (0 when unknown). Of two runtimes holding different definitions of
   * one function (a rolling deploy), the later one sets the function's consumer.
   */
  readonly definedAt: number;
  readonly definition: FunctionDefinition;
  readonly retry: ResolvedRetryPolicy;
  readonly timeoutMs: number;
  readonly concurrency: number;
  readonly description: string;
  /** Set for functions with `schedule` or `every`. */
  readonly schedule: ResolvedSchedule | undefined;
  /** Input of scheduled jobs (checked against the input schema at deploy). */
  readonly scheduleInput: unknown;
  /** Set for functions with `on`: the event pattern and where a new listener starts. */
  readonly listen: { readonly pattern: string; readonly from: "new" | "all" } | undefined;
  /** Where the handler runs (`"thread"`: a worker thread of the function's pool). */
  readonly isolation: Isolation;
  /** Whether its jobs may share a transaction and COMMIT with others (group commit). */
  readonly sharedCommit: boolean;
  /** Set for functions with `concurrencyLimit` or `rateLimit`. */
  readonly flow: ResolvedFlow | undefined;
}

export const DEFAULT_TIMEOUT: Duration = "30s";
export const DEFAULT_CONCURRENCY = 8;
export const MAX_CONCURRENCY = 10_000;
export const DEFAULT_ISOLATION: Isolation = "none";
const KNOWN_OPTIONS = new Set([
  "input",
  "output",
  "retry",
  "timeout",
  "concurrency",
  "description",
  "handler",
  "schedule",
  "every",
  "catchUp",
  "scheduleInput",
  "on",
  "onFrom",
  "isolation",
  "sharedCommit",
  "concurrencyLimit",
  "rateLimit",
]);

/** Checks a definition's options; throws E_FUNCTION_INVALID naming the option and why. */
export function resolveFunction(
  name: string,
  file: string,
  version: number,
  definition: FunctionDefinition,
  definedAt = 0,
): ResolvedFunction {
  const spec = definition.spec as FunctionSpec<z.ZodType, z.ZodType | undefined>;
  const refuse = (message: string): never => {
    throw new JetfnError("E_FUNCTION_INVALID", `function ${name} (${file}): ${message}`);
  };
  for (const key of Object.keys(spec)) {
    if (!KNOWN_OPTIONS.has(key)) refuse(`unknown option "${key}"`);
  }
  if (!isZodSchema(spec.input)) refuse("option input must be a zod schema");
  if (spec.output !== undefined && !isZodSchema(spec.output)) refuse("option output must be a zod schema");
  if (typeof spec.handler !== "function") refuse("option handler must be an async function");
  const concurrency = spec.concurrency ?? DEFAULT_CONCURRENCY;
  if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > MAX_CONCURRENCY) {
    refuse(`option concurrency must be an integer from 1 to ${MAX_CONCURRENCY}, got ${String(concurrency)}`);
  }
  let timeoutMs = 0;
  let retry: ResolvedRetryPolicy | undefined;
  try {
    timeoutMs = parseDuration(spec.timeout ?? DEFAULT_TIMEOUT);
  } catch (error) {
    refuse(`option timeout: ${(error as Error).message}`);
  }
  if (timeoutMs < 1) refuse("option timeout must be at least 1ms");
  try {
    retry = resolveRetryPolicy(spec.retry);
  } catch (error) {
    refuse(`option ${(error as Error).message}`);
  }
  if (spec.description !== undefined && typeof spec.description !== "string") {
    refuse("option description must be a string");
  }
  let schedule: ResolvedSchedule | undefined;
  try {
    schedule = resolveSchedule(spec);
  } catch (error) {
    refuse((error as Error).message);
  }
  const scheduleInput = schedule ? resolveScheduleInput(spec, refuse) : undefined;
  if (!schedule && spec.scheduleInput !== undefined) refuse("option scheduleInput needs a schedule or every");
  const isolation = spec.isolation ?? DEFAULT_ISOLATION;
  if (isolation !== "none" && isolation !== "thread") {
    refuse(`option isolation must be "none" or "thread", got ${JSON.stringify(isolation)}`);
  }
  const sharedCommit = spec.sharedCommit ?? true;
  if (typeof sharedCommit !== "boolean") {
    refuse(`option sharedCommit must be true or false, got ${JSON.stringify(sharedCommit)}`);
  }
  let flow: ResolvedFlow | undefined;
  try {
    flow = resolveFlow(spec.concurrencyLimit as never, spec.rateLimit as never);
  } catch (error) {
    refuse(`option ${(error as Error).message}`);
  }
  // A listener's jobs are events under ids the runtime derives; they cannot wait and come back yet.
  if (flow && spec.on !== undefined) refuse("options concurrencyLimit and rateLimit do not work with on yet");
  return Object.freeze({
    name,
    file,
    version,
    definedAt,
    definition,
    retry: retry as ResolvedRetryPolicy,
    timeoutMs,
    concurrency,
    description: spec.description ?? "",
    schedule,
    scheduleInput,
    listen: resolveListen(spec, refuse),
    isolation,
    sharedCommit,
    flow,
  });
}

/** The input scheduled jobs carry (nothing unless given; an empty input is also tried as `{}`). */
function resolveScheduleInput(
  spec: FunctionSpec<z.ZodType, z.ZodType | undefined>,
  refuse: (message: string) => never,
): unknown {
  if (spec.scheduleInput !== undefined) {
    if (!spec.input.safeParse(spec.scheduleInput).success)
      refuse("option scheduleInput does not match the input schema");
    return spec.scheduleInput;
  }
  if (!spec.input.safeParse(undefined).success && !spec.input.safeParse({}).success) {
    refuse("option scheduleInput is needed: the input schema refuses an empty input");
  }
  return undefined;
}

function resolveListen(
  spec: FunctionSpec<z.ZodType, z.ZodType | undefined>,
  refuse: (message: string) => never,
): ResolvedFunction["listen"] {
  if (spec.onFrom !== undefined && spec.onFrom !== "new" && spec.onFrom !== "all") {
    refuse(`option onFrom must be "new" or "all", got ${JSON.stringify(spec.onFrom)}`);
  }
  if (spec.on === undefined) {
    if (spec.onFrom !== undefined) refuse("option onFrom needs on");
    return undefined;
  }
  const pattern = isEventDefinition(spec.on) ? spec.on.name : spec.on;
  if (typeof pattern !== "string" || !isValidEventPattern(pattern)) {
    refuse(
      `option on must be an event name or pattern (lower-case dot-separated segments, "*" for one segment, a trailing ">" for several), got ${JSON.stringify(pattern)}`,
    );
  }
  return Object.freeze({ pattern, from: spec.onFrom ?? "new" });
}

function isZodSchema(value: unknown): value is z.ZodType {
  return typeof value === "object" && value !== null && typeof (value as z.ZodType).safeParse === "function";
}
