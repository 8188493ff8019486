import { randomUUID } from "node:crypto";
import type { Logger } from "pino";
import type { Sql } from "postgres";
import type { DatabaseBinder } from "../db/app-database";
import type { CommitGroups } from "../db/commit-groups";
import { FENCED_OUT_CODE, ID_CONFLICT_CODE, idConflictError, type JobRecord } from "../db/invocation-store";
import {
  commitWith,
  createInvocationTransaction,
  type FinalStatement,
  type InvocationTransaction,
  type TransactionLoss,
} from "../db/invocation-transaction";
import { outboxStatement } from "../db/outbox";
import { isSharedCommitFailure } from "../db/shared-commit-error";
import { isDatabaseLoss } from "../db/transaction-parts";
import { isValidFunctionName } from "../deploy/function-name";
import { eventMessage, jobMessage, type OutboxMessage } from "../outbox/outbox-message";
import type { EventDefinition } from "../sdk/define-event";
import type { EnqueueOptions, FunctionContext, ResolvedFunction, StepContext } from "../sdk/define-function";
import { parseDuration } from "../support/duration";
import { JetfnError, toJetfnError } from "../support/errors";
import { budgetedLogger, DEFAULT_LOG_LIMITS, LogBudget, type LogLimits } from "../support/log-budget";
import { invocationLogger } from "../support/logger";
import type { WaitToCatchUp } from "../triggers/event-waiters";
import type { InvocationKind, RuntimeEmitter } from "../triggers/events";
import type { Cancellations } from "./cancellation";
import { InvocationDeadline } from "./invocation-deadline";
import { dueTime } from "./job-delay";
import { resultJson } from "./result-json";
import { type StepHost, Steps, type Suspension, stepInvalid, waitSpec } from "./steps";
import { parseInput, parseOutput } from "./validation";

/** What one invocation needs to know. */
export interface InvocationRequest {
  fn: ResolvedFunction;
  invocationId: string;
  attempt: number;
  kind: InvocationKind;
  /** Decoded JSON body, not yet validated. */
  input: unknown;
  /** Fired when the runtime shuts down: aborts the handler like a timeout. */
  shutdownSignal: AbortSignal;
  /** For jobs: the statement committed together with the handler's writes, given the result's stored JSON. */
  finalStatement?: (resultJson: string) => FinalStatement;
  /** For jobs: what the job's record holds; its first durable step creates it (steps.ts). */
  jobRecord?: JobRecord;
  onProgress?: (done: number, total: number | undefined) => void;
  /** Called when only a shared COMMIT is left to wait for (the handler and its writes are done). */
  handlerDone?: () => void;
  /** The invocation's logger, when the caller already has one. */
  log?: Logger;
  /** For jobs: cancel marks, which abort the handler like a timeout (E_CANCELLED). */
  cancellations?: Cancellations;
}

/** How an invocation ended; `log` is its child logger, for the caller's one closing line. */
export type InvocationOutcome =
  | {
      ok: true;
      result: unknown;
      /** For jobs: the result as the JSON stored in the job's record. */
      resultJson: string;
      durationMs: number;
      /** True when the final statement was committed with the handler's transaction. */
      committed: boolean;
      /** Jobs and events the handler asked for, committed in the outbox: publish them now. */
      outbox: OutboxMessage[];
      log: Logger;
    }
  | {
      ok: false;
      error: JetfnError;
      kind: FailureKind;
      durationMs: number;
      log: Logger;
      /** For `suspended`: why (it sleeps until then, or it was a stale copy). */
      suspension?: Suspension;
    };

/**
 * What ended a failed invocation, as the runtime saw it (never read off the error the handler
 * threw, which it may have wrapped, replaced or made up):
 * - `handler`: the handler, its input or output, or one of its statements failed; its retry policy decides.
 * - `fenced`: its final record was refused because another attempt already finished the job.
 * - `shared-commit`: the shared transaction it was in did not commit; it runs again alone.
 * - `database`: the database went away during it; it runs again once the database answers.
 * - `suspended`: not a failure: the run ended at a durable sleep, its invocation asleep, or stopped as
 *   a stale copy (another run went on from there). Its message is done with.
 */
export type FailureKind = "handler" | "fenced" | "suspended" | TransactionLoss;

/** What invoke() uses from the runtime. */
export interface InvokeDependencies {
  sql: Sql;
  logger: Logger;
  events: RuntimeEmitter;
  /** The NATS server's max payload, to refuse oversized jobs and events when they are asked for. */
  maxPayload?: number;
  /** Share transactions and COMMITs with other invocations (each in its own savepoint). */
  commitGroups?: CommitGroups;
  /** What a handler may log per invocation. @default DEFAULT_LOG_LIMITS */
  logLimits?: LogLimits;
  /** Makes `ctx.db` over the invocation's transaction, with the app's schema. @default bindPlainDatabase */
  bindDatabase?: DatabaseBinder;
  /** Publishes the jobs and events a durable step committed. @default none: the outbox relay's sweep does */
  publishCommitted?: (messages: OutboxMessage[], log: Logger) => Promise<void>;
  /** The runtimes' secret, which signs a durable sleep's resumption. Without it, `ctx.sleep` fails. */
  resumeSecret?: string;
  /** Matches stored events with durable waits (triggers/event-waiters.ts): a wait just recorded reads those before it. */
  eventWaiters?: { catchUpWait(wait: WaitToCatchUp): Promise<number> };
}

/**
 * Runs one invocation: validates input, runs the handler in its own lazy transaction with a
 * timeout, validates output, commits (with the job's final record) or rolls back.
 */
export function invoke(deps: InvokeDependencies, request: InvocationRequest): Promise<InvocationOutcome> {
  return new Invocation(deps, request).run();
}

/**
 * One invocation in progress. It is also what the handler's `ctx` reads from, so an invocation
 * costs a few objects and no closures: thousands run a second.
 */
class Invocation {
  readonly deps: InvokeDependencies;
  readonly request: InvocationRequest;
  readonly deadline: InvocationDeadline;
  /** Jobs and events the handler asked for, committed with its transaction. */
  readonly outbox: OutboxMessage[] = [];
  readonly #started = performance.now();
  #log: Logger | undefined;
  /** What the handler logged through ctx.log; made when it first reaches for it. */
  #logBudget: LogBudget | undefined;
  #handlerLog: Logger | undefined;
  /** Made when the handler first reaches for ctx.db: most handlers that never do pay nothing for it. */
  #transaction: InvocationTransaction | undefined;
  #ended = false;
  #unwatch: (() => void) | undefined;
  /** Made at the handler's first step call. */
  #steps: Steps | undefined;

  constructor(deps: InvokeDependencies, request: InvocationRequest) {
    this.deps = deps;
    this.request = request;
    this.#log = request.log;
    this.deadline = new InvocationDeadline(request.fn, request.shutdownSignal);
    this.#unwatch = request.cancellations?.watch(request.invocationId, (reason) => this.deadline.cancel(reason));
  }

  get log(): Logger {
    const { fn, invocationId, attempt } = this.request;
    this.#log ??= invocationLogger(this.deps.logger, fn.name, invocationId, attempt);
    return this.#log;
  }

  /** The logger the handler gets: its lines are cut to size and counted against its budget. */
  get handlerLog(): Logger {
    if (!this.#handlerLog) {
      this.#logBudget = new LogBudget(this.deps.logLimits ?? DEFAULT_LOG_LIMITS);
      this.#handlerLog = budgetedLogger(this.log, this.#logBudget);
    }
    return this.#handlerLog;
  }

  get transaction(): InvocationTransaction {
    if (!this.#transaction) {
      const { fn, invocationId, attempt } = this.request;
      this.#transaction = createInvocationTransaction(
        this.deps.sql,
        { functionName: fn.name, invocationId, attempt, statementTimeoutMs: fn.timeoutMs },
        this.deps.commitGroups,
        this.deps.bindDatabase,
      );
      // A handler that outlived its invocation gets a closed transaction, as if it had one all along.
      if (this.#ended) void this.#transaction.rollback();
    }
    return this.#transaction;
  }

  /** `ctx.db`: a job that uses durable steps does its database work inside them. */
  get handlerDb(): FunctionContext["db"] {
    if (this.#steps && this.request.jobRecord) {
      throw stepInvalid(
        "ctx.db was used outside a step after the handler called ctx.step: once a job uses steps, its database work goes inside them (step.db)",
      );
    }
    return this.transaction.db;
  }

  /**
   * `ctx.enqueue`, `ctx.call` and `ctx.emit` of a job commit with its final record: inside a step's
   * `fn` they would be lost when a later run replays that step, so they are refused there.
   */
  outsideSteps(api: string): void {
    const running = this.#steps?.running;
    if (running !== undefined && this.request.jobRecord) {
      throw stepInvalid(
        `${api} was called while step "${running}" runs: inside a step, use the step's own (step.enqueue, step.emit), which commit with it`,
      );
    }
  }

  /** `ctx.step`. */
  step(name: unknown, fn: unknown, options: unknown): Promise<unknown> {
    try {
      return this.#stepsOfRun().step(name, fn, options);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** `ctx.waitForEvent`. */
  waitForEvent(name: unknown, options: unknown): Promise<unknown> {
    try {
      return this.#stepsOfRun().waitForEvent(
        name,
        waitSpec(name, options, (timeout) => parseDuration(timeout as never), MAX_SLEEP_MS),
      );
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** `ctx.sleep` and `ctx.sleepUntil`: `until` gives the wake time (epoch ms) from now. */
  sleep(name: unknown, api: string, until: () => number): Promise<void> {
    try {
      const wakeAt = until();
      if (!Number.isFinite(wakeAt)) throw stepInvalid(`${api}: the time to sleep until is not a valid time`);
      if (wakeAt > Date.now() + MAX_SLEEP_MS) throw stepInvalid(`${api}: a sleep lasts at most a year`);
      return this.#stepsOfRun().sleep(name, wakeAt);
    } catch (error) {
      if (error instanceof TypeError) return Promise.reject(stepInvalid(`${api}: ${error.message}`));
      return Promise.reject(error);
    }
  }

  #stepsOfRun(): Steps {
    if (this.#steps) return this.#steps;
    const { request, deps } = this;
    const record = request.jobRecord;
    if (record && this.#transaction) {
      throw stepInvalid(
        "ctx.step was called after the handler used ctx.db outside a step: a job that uses steps does its database work inside them (step.db)",
      );
    }
    const invocation = this;
    const host: StepHost = {
      sql: deps.sql,
      functionName: request.fn.name,
      get maxPayload() {
        return deps.maxPayload;
      },
      record,
      retry: request.fn.retry,
      ownTransaction: (key, attempt) =>
        createInvocationTransaction(
          deps.sql,
          {
            functionName: request.fn.name,
            invocationId: request.invocationId,
            // Audit rows say which attempt of the step wrote them.
            attempt,
            step: key,
            statementTimeoutMs: request.fn.timeoutMs,
          },
          undefined,
          deps.bindDatabase,
        ),
      get ended() {
        return invocation.#ended;
      },
      get stopped() {
        return invocation.deadline.signal.aborted;
      },
      stepContext: (key, transaction, outbox, attempt) => new StepView(invocation, key, transaction, outbox, attempt),
      publishCommitted: (messages) => deps.publishCommitted?.(messages, invocation.log) ?? Promise.resolve(),
      resumeSecret: deps.resumeSecret,
      catchUpWait: deps.eventWaiters && ((wait) => deps.eventWaiters?.catchUpWait(wait) ?? Promise.resolve(0)),
      suspend: (reason) => invocation.deadline.suspend(reason),
      get log() {
        return invocation.log;
      },
    };
    this.#steps = new Steps(host);
    return this.#steps;
  }

  progress(done: number, total: number | undefined): void {
    if (!Number.isFinite(done) || (total !== undefined && !Number.isFinite(total))) return;
    const { request } = this;
    request.onProgress?.(done, total);
    this.deps.events.emit("invocation:progress", {
      fn: request.fn.name,
      invocationId: request.invocationId,
      attempt: request.attempt,
      kind: request.kind,
      done,
      total,
    });
  }

  enqueue(
    functionName: string,
    input: unknown,
    options: EnqueueOptions | undefined,
    outbox: OutboxMessage[] = this.outbox,
  ): { id: string } {
    if (!isValidFunctionName(functionName)) {
      throw new JetfnError("E_FUNCTION_NOT_FOUND", `cannot enqueue "${functionName}": not a valid function name`);
    }
    const id = options?.id ?? randomUUID();
    const due = options ? dueTime(options) : undefined;
    outbox.push(jobMessage(functionName, input, id, this.deps.maxPayload, due, options));
    return { id };
  }

  emit(event: string | EventDefinition, data: unknown, outbox: OutboxMessage[] = this.outbox): { id: string } {
    const message = eventMessage(event, data, undefined, this.deps.maxPayload);
    outbox.push(message);
    return { id: message.id };
  }

  async run(): Promise<InvocationOutcome> {
    const { fn, invocationId, attempt, kind } = this.request;
    const { events } = this.deps;
    events.emit("invocation:start", { fn: fn.name, invocationId, attempt, kind });
    // Whether a failure came from the commit (jetfn's own statements) rather than the handler.
    let committing = false;
    try {
      const input = parseInput(fn.definition.spec.input, this.request.input, fn.name);
      const ctx = new InvocationContext(this);
      const returned = await this.deadline.race(fn.definition.spec.handler, input, ctx, this);
      // A step found the invocation ended (or a refused statement): the handler cannot catch that away.
      if (this.#steps?.ending) throw this.#steps.ending.error;
      // It slept (a sleep it did not await): the next run finishes it.
      if (this.#steps?.suspension) throw new JetfnError("E_SUSPENDED", `${fn.name} returned while asleep`);
      const result = parseOutput(fn.definition.spec.output, returned ?? null, fn.name) ?? null;
      // A job's result is stored: one that cannot be fails here, as the handler's fault.
      const json = this.request.finalStatement ? resultJson(result, fn.name, this.deps.maxPayload) : "";
      committing = true;
      // Most invocations that wrote nothing have nothing to wait for here: no await, no turn lost.
      const commit = this.#commit(json);
      const committed = typeof commit === "boolean" ? commit : await commit;
      const durationMs = performance.now() - this.#started;
      events.emit("invocation:success", { fn: fn.name, invocationId, attempt, kind, durationMs });
      return { ok: true, result, resultJson: json, durationMs, committed, outbox: this.outbox, log: this.log };
    } catch (thrown) {
      this.#ended = true;
      const suspension = this.#steps?.suspension;
      if (suspension) {
        const durationMs = performance.now() - this.#started;
        const wakeAt = suspension.wakeAt;
        // A step's failed attempt is a failure to count, though the job goes on (not final).
        const retry = suspension.retry;
        if (retry)
          events.emit("invocation:failure", {
            fn: fn.name,
            invocationId,
            attempt,
            kind,
            durationMs,
            error: retry.error,
            final: false,
          });
        events.emit("invocation:suspended", { fn: fn.name, invocationId, attempt, kind, durationMs, wakeAt });
        return { ok: false, error: toJetfnError(thrown), kind: "suspended", suspension, durationMs, log: this.log };
      }
      // Rejects only when the handler's failure may stem from a group's uncommitted writes and
      // that group did not commit (see lane-seat.ts): then the job runs again, whatever it saw.
      const groupFailed = await this.#transaction?.rollback().then(
        () => undefined,
        (error: unknown) => error,
      );
      // What a step found (the invocation ended or cancelled, its id another function's, a refused
      // statement) ends the run so, whatever the handler made of that step's error.
      const ending = this.#steps?.ending;
      const failure: FailureKind =
        groupFailed !== undefined
          ? "shared-commit"
          : ending
            ? ending.fenced
              ? "fenced"
              : "handler"
            : failureKind(thrown, committing, this.#transaction?.lost ?? this.#steps?.lost);
      const conflict = failure === "handler" && committing ? idConflict(thrown, this.request) : undefined;
      const error = ending?.error ?? conflict ?? toJetfnError(groupFailed ?? thrown);
      return { ok: false, error, kind: failure, durationMs: performance.now() - this.#started, log: this.log };
    } finally {
      this.#ended = true;
      this.deadline.stop();
      this.#steps?.abandon();
      this.#unwatch?.();
      this.#reportDroppedLines();
    }
  }

  /** One line, at the end, for what the handler logged past its budget. */
  #reportDroppedLines(): void {
    const budget = this.#logBudget;
    if (!budget || budget.dropped === 0) return;
    this.log.warn(
      { droppedLogLines: budget.dropped, loggedLines: budget.lines, loggedBytes: budget.bytes },
      "The handler logged past its budget; the lines beyond it were dropped.",
    );
  }

  /**
   * Commits the handler's transaction with the outbox rows and the final statement (the job's
   * record). A handler that never touched the database still gets its outbox rows written
   * atomically with its record, in one statement. Resolves to whether the final statement was
   * committed here.
   */
  #commit(resultJson: string): Promise<boolean> | boolean {
    const transaction = this.#transaction;
    if (!transaction?.begun && this.outbox.length === 0) {
      return transaction ? transaction.commit().then(() => false) : false;
    }
    return this.#commitWithOutbox(transaction, resultJson);
  }

  async #commitWithOutbox(transaction: InvocationTransaction | undefined, resultJson: string): Promise<boolean> {
    const { request } = this;
    const origin = { functionName: request.fn.name, invocationId: request.invocationId };
    const final = request.finalStatement?.(resultJson);
    const statement = this.outbox.length > 0 ? outboxStatement(this.outbox, origin, final) : final;
    await commitWith(this.deps.sql, transaction, statement, request.handlerDone);
    return true;
  }
}

/**
 * Classifies a failure by where it came from: only the commit's own errors can say the record was
 * fenced out, the shared COMMIT failed or the connection was lost; before the commit, only what the
 * transaction's statements saw can say so. Anything else the handler threw is the handler's.
 */
function failureKind(thrown: unknown, committing: boolean, lost: TransactionLoss | undefined): FailureKind {
  if (committing) {
    // First: a shared COMMIT that a member's fence failed carries the fence's error as its cause.
    if (isSharedCommitFailure(thrown)) return "shared-commit";
    if ((thrown as { code?: unknown } | undefined)?.code === FENCED_OUT_CODE) return "fenced";
    if (isDatabaseLoss(thrown)) return "database";
  }
  return lost ?? "handler";
}

/**
 * The record refused this job because its id belongs to another function's invocation (only the
 * commit's own statements can say so; a handler raising the same code fails as its own error).
 */
function idConflict(thrown: unknown, request: InvocationRequest): JetfnError | undefined {
  if ((thrown as { code?: unknown } | undefined)?.code !== ID_CONFLICT_CODE) return undefined;
  return idConflictError(request.invocationId, request.fn.name, undefined, thrown);
}

/** What a handler sees as `ctx`: a view of its invocation. */
class InvocationContext implements FunctionContext {
  readonly #invocation: Invocation;
  readonly invocationId: string;
  readonly attempt: number;
  readonly functionName: string;

  constructor(invocation: Invocation) {
    this.#invocation = invocation;
    this.invocationId = invocation.request.invocationId;
    this.attempt = invocation.request.attempt;
    this.functionName = invocation.request.fn.name;
  }

  get db(): FunctionContext["db"] {
    return this.#invocation.handlerDb;
  }

  get log(): Logger {
    return this.#invocation.handlerLog;
  }

  get signal(): AbortSignal {
    return this.#invocation.deadline.signal;
  }

  // Functions made on first use (most handlers never use them) and bound, so a handler may take
  // them off ctx (`const { enqueue } = ctx`).
  #progress: FunctionContext["progress"] | undefined;
  #enqueue: FunctionContext["enqueue"] | undefined;
  #emit: FunctionContext["emit"] | undefined;

  get progress(): FunctionContext["progress"] {
    this.#progress ??= (done, total) => this.#invocation.progress(done, total);
    return this.#progress;
  }

  get enqueue(): FunctionContext["enqueue"] {
    this.#enqueue ??= async (functionName, input, options) => {
      this.#invocation.outsideSteps("ctx.enqueue");
      return this.#invocation.enqueue(functionName, input, options);
    };
    return this.#enqueue;
  }

  get call(): FunctionContext["call"] {
    return this.enqueue;
  }

  get emit(): FunctionContext["emit"] {
    this.#emit ??= async (event, data) => {
      this.#invocation.outsideSteps("ctx.emit");
      return this.#invocation.emit(event, data);
    };
    return this.#emit;
  }

  #step: FunctionContext["step"] | undefined;

  get step(): FunctionContext["step"] {
    this.#step ??= ((name: string, fn: unknown, options?: unknown) =>
      this.#invocation.step(name, fn, options)) as FunctionContext["step"];
    return this.#step;
  }

  #sleep: FunctionContext["sleep"] | undefined;
  #sleepUntil: FunctionContext["sleepUntil"] | undefined;

  get sleep(): FunctionContext["sleep"] {
    this.#sleep ??= (name, duration) =>
      this.#invocation.sleep(name, "ctx.sleep", () => Date.now() + parseDuration(duration));
    return this.#sleep;
  }

  get sleepUntil(): FunctionContext["sleepUntil"] {
    this.#sleepUntil ??= (name, time) => this.#invocation.sleep(name, "ctx.sleepUntil", () => timeOf(time));
    return this.#sleepUntil;
  }

  #waitForEvent: FunctionContext["waitForEvent"] | undefined;

  get waitForEvent(): FunctionContext["waitForEvent"] {
    this.#waitForEvent ??= ((name: string, options: unknown) =>
      this.#invocation.waitForEvent(name, options)) as FunctionContext["waitForEvent"];
    return this.#waitForEvent;
  }
}

/** Longest a durable sleep may last. */
const MAX_SLEEP_MS = 366 * 86_400_000;

/** A time to sleep until, as epoch ms (NaN when it is none). */
function timeOf(time: Date | string | number): number {
  if (time instanceof Date) return time.getTime();
  if (typeof time === "number") return time;
  if (typeof time === "string") return Date.parse(time);
  return Number.NaN;
}

/**
 * What a durable step's `fn` sees: its own transaction and outbox rows in a job; in a call, the
 * call's own (its steps run at once, in its transaction).
 */
class StepView implements StepContext {
  readonly #invocation: Invocation;
  readonly #key: string;
  readonly #transaction: InvocationTransaction | undefined;
  readonly #outbox: OutboxMessage[];
  readonly attempt: number;
  #log: Logger | undefined;
  #closed = false;

  constructor(
    invocation: Invocation,
    key: string,
    transaction: InvocationTransaction | undefined,
    outbox: OutboxMessage[],
    attempt: number,
  ) {
    this.#invocation = invocation;
    this.#key = key;
    this.#transaction = transaction;
    this.#outbox = transaction ? outbox : invocation.outbox;
    this.attempt = attempt;
  }

  get db(): StepContext["db"] {
    return (this.#transaction ?? this.#invocation.transaction).db;
  }

  get log(): Logger {
    this.#log ??= this.#invocation.handlerLog.child({ step: this.#key });
    return this.#log;
  }

  get signal(): AbortSignal {
    return this.#invocation.deadline.signal;
  }

  progress(done: number, total?: number): void {
    this.#invocation.progress(done, total);
  }

  enqueue = async (functionName: string, input: unknown, options?: EnqueueOptions): Promise<{ id: string }> => {
    this.#open("step.enqueue");
    return this.#invocation.enqueue(functionName, input, options, this.#outbox);
  };

  call = this.enqueue;

  emit = async (event: string | EventDefinition, data: unknown): Promise<{ id: string }> => {
    this.#open("step.emit");
    return this.#invocation.emit(event, data, this.#outbox);
  };

  /** The step ended: its outbox rows committed (or rolled back) with it. */
  close(): void {
    this.#closed = true;
  }

  #open(api: string): void {
    if (this.#closed) {
      throw stepInvalid(`${api} was called after step "${this.#key}" ended: what a step enqueues commits with it`);
    }
  }
}
