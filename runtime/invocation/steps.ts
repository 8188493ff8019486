import type { Logger } from "pino";
import type { Sql } from "postgres";
import {
  FENCED_OUT_CODE,
  ID_CONFLICT_CODE,
  idConflictError,
  type JobRecord,
  type StoredError,
} from "../db/invocation-store";
import {
  commitWith,
  type FinalStatement,
  type InvocationTransaction,
  type TransactionLoss,
} from "../db/invocation-transaction";
import { outboxStatement } from "../db/outbox";
import { storableJson } from "../db/storable-json";
import { isDatabaseLoss } from "../db/transaction-parts";
import { type OutboxMessage, resumptionMessage } from "../outbox/outbox-message";
import { isValidEventName } from "../sdk/define-event";
import type { StepContext, StepOptions } from "../sdk/define-function";
import { isoNow } from "../support/clock";
import { formatDuration } from "../support/duration";
import { isRetryable } from "../support/error-codes";
import { JetfnError, toJetfnError } from "../support/errors";
import { failureFields } from "../support/logger";
import type { WaitToCatchUp } from "../triggers/event-waiters";
import { storedError } from "./job-endings";
import { resultJson } from "./result-json";
import { retryToken, sleepToken, sleepTokenCount, waitTimeoutToken } from "./resume-tag";
import { backoffDelay, type ResolvedRetryPolicy, resolveRetryPolicy } from "./retry-policy";

/** Most steps one invocation may record (docs/durable-steps.md#what-a-step-returns). */
export const MAX_STEPS = 1_000;
/** Most bytes of stored step results one invocation may hold: every run reads them all. */
export const MAX_STEP_RESULT_BYTES = 16 * 1024 * 1024;
const MAX_NAME_LENGTH = 100;

/** Postgres error code of `jetfn.record_step` when another run recorded the step first. */
export const STEP_RECORDED_CODE = "JF004";
/** Postgres error code of a run whose invocation another run suspended, or a newer resumption owns (0034). */
const STALE_RUN_CODE = "JF005";
/** A resumption this early (clocks apart) still counts as due; an earlier one sleeps again for the rest. */
const EARLY_WAKE_MS = 1_000;

const RECORD_STEP_SQL =
  "select jetfn.record_step($1, $2, $3, $4::jsonb, $5, $6, $7, $8, $9::smallint, $10, $11, $12, $13::jsonb, $14, $15)";
const AWAIT_SQL =
  "select jetfn.await_event($1, $2, $3, $4::jsonb, $5, $6, $7, $8, $9::smallint, $10, $11, $12, $13, " +
  "array(select jsonb_array_elements_text($14::jsonb)), $15::jsonb, $16, $17, $18) as after_at";
const TIME_OUT_SQL = "select jetfn.time_out_wait($1, $2, $3) as timed_out";
const NEXT_SEQ_SQL = "select coalesce(max(seq), 0) as last from jetfn.steps where invocation_id = $1";
/** Postgres error code of jetfn.await_event when the wait's token names another seq than the wait gets. */
const WRONG_SEQ_CODE = "JF008";
/** Tries of a wait's catch-up before it gives up (see #catchUp). */
const CATCH_UP_TRIES = 4;
/** Most UTF-8 bytes of a wait's match, paths and values together (the index holds them). */
const MAX_MATCH_BYTES = 1_024;
/** Most paths a wait's `match` may name. */
const MAX_MATCH_PATHS = 8;
/** A dotted path into an event's data: `orderId`, `customer.tier`. */
const MATCH_PATH = /^[A-Za-z0-9_-]{1,64}(\.[A-Za-z0-9_-]{1,64}){0,7}$/;
const SUSPEND_SQL =
  "select jetfn.suspend_invocation($1, $2, $3, $4::jsonb, $5, $6, $7, $8, $9::smallint, $10, $11, $12, $13, $14, $15)";
const STEP_FAILURE_SQL =
  "select jetfn.record_step_failure($1, $2, $3, $4::jsonb, $5, $6, $7, $8, $9::smallint, $10, $11, $12, $13, $14::jsonb, $15, $16, $17, $18)";
const MEMOS_SQL =
  "select i.function, i.status as record_status, jetfn.is_final(i.status) as final, i.resume, s.key, s.seq, s.kind, s.status, " +
  "s.attempts, s.result::text as result, s.error::text as error, " +
  "(extract(epoch from s.wake_at - clock_timestamp()) * 1000)::float8 as wake_in_ms " +
  "from jetfn.invocations i left join jetfn.steps s on s.invocation_id = i.id where i.id = $1 order by s.seq";
const MEMO_SQL =
  "select kind, seq, status, attempts, result::text as result, error::text as error from jetfn.steps where invocation_id = $1 and key = $2";
/**
 * Errors of the step rules (a step API used wrongly, the invocation's limits): not the step's
 * failed attempts, they end the run as they are.
 */
const STEP_RULE_CODES = new Set(["E_STEP_INVALID", "E_STEP_LIMIT", "E_STEP_MISMATCH"]);
const RECORD_STATUS_SQL = "select status, resume from jetfn.invocations where id = $1";

/** A step's row, as a later run reads it. */
interface Memo {
  kind: string;
  /** Its stored result, parsed. */
  value: unknown;
  /** How long until a sleep's end, by the database's clock (ms; negative once it passed). */
  wakeInMs?: number;
  seq?: number;
  /**
   * A sleep's: `sleeping` until the resumption that finds it due (by the database's clock) makes it
   * `succeeded`. A step's: `succeeded`, `retrying` (an attempt failed, another follows) or `failed`.
   */
  status?: string;
  /** A step's recorded attempts. */
  attempts?: number;
  /** A failed step's last error. */
  error?: StoredError;
}

/** What the steps of one invocation need from it. */
export interface StepHost {
  readonly sql: Sql;
  readonly functionName: string;
  readonly maxPayload: number | undefined;
  /** The job's record, which the first step creates; undefined for a call, whose steps run at once. */
  readonly record: JobRecord | undefined;
  /** The function's retry policy: a step's, unless the step gives its own. */
  readonly retry: ResolvedRetryPolicy;
  /** A transaction of the step's own, stamped as the invocation's, with the step's key and attempt. */
  ownTransaction(key: string, attempt: number): InvocationTransaction;
  /** What the step's `fn` gets, over its transaction and its outbox rows; closed when the step ends. */
  stepContext(
    key: string,
    transaction: InvocationTransaction | undefined,
    outbox: OutboxMessage[],
    attempt: number,
  ): StepContext & { close(): void };
  /** The run ended (its handler timed out or failed): a step still running then commits nothing. */
  readonly ended: boolean;
  /** The run was told to stop (a timeout, a cancel, a shutdown): a step's error then is not the step's own. */
  readonly stopped: boolean;
  /** Publishes outbox rows a step committed; the relay's sweep is the fallback. */
  publishCommitted(messages: OutboxMessage[]): Promise<void>;
  /** Matches the events stored since a wait began with the waits, and marks it caught up (event-waiters.ts); undefined where none match. */
  catchUpWait?(wait: WaitToCatchUp): Promise<number>;
  /** The runtimes' secret, which signs a sleep's resumption (resume-tag.ts); undefined where there is none. */
  readonly resumeSecret: string | undefined;
  /** Ends the run at once without an outcome of its own (it slept, or found itself stale): fires ctx.signal. */
  suspend(reason: JetfnError): void;
  log: Logger;
}

/**
 * Why a run ended without an outcome: it put its invocation to sleep until `wakeAt` (the next run
 * starts then), or a step failed and runs again then (`retry`, its key); or it was stale (another run
 * suspended the invocation, or a newer resumption owns it).
 */
export type Suspension =
  | {
      wakeAt: number;
      retry?: { step: string; error: JetfnError };
      wait?: { step: string; event: string };
      stale?: undefined;
    }
  | { stale: true; wakeAt?: undefined; retry?: undefined; wait?: undefined };

/**
 * What ends a run whatever its handler makes of the step's error: the invocation ended (`fenced`:
 * another attempt finished it), it was cancelled, its id is another function's, or a step sent a
 * statement the guard refused.
 */
export interface RunEnding {
  error: JetfnError;
  fenced: boolean;
}

/**
 * The durable steps of one run of an invocation: each step's key, its memo, and its transaction.
 * Made at the handler's first step call. Steps run one at a time, in the order they were called.
 */
export class Steps {
  readonly #host: StepHost;
  /** Calls per name in this run: the second `notify` is `notify#2`. */
  readonly #calls = new Map<string, number>();
  #memos: Promise<Map<string, Memo>> | undefined;
  #resultBytes = 0;
  /** The end of the last step called (whether it failed): the next one starts after it. */
  #tail: Promise<boolean> = Promise.resolve(false);
  /** The key of the step whose `fn` runs now. */
  #running: string | undefined;
  /** The transaction of the step whose `fn` runs now. */
  #transaction: InvocationTransaction | undefined;
  /** Set once the run cannot go on (see RunEnding). */
  ending: RunEnding | undefined;
  /** A step's transaction was lost with the database: the run is tried again without spending an attempt. */
  lost: TransactionLoss | undefined;
  /** Set once the run suspended (its step promise never settles). */
  suspension: Suspension | undefined;
  /** The highest seq among the invocation's steps, as this run knows them: a new step is likely the next. */
  #lastSeq = 0;
  /** The record's token when the memos were read: another than this run's makes the run stale. */
  #recordResume: string | null = null;

  constructor(host: StepHost) {
    this.#host = host;
  }

  /** The key of the step whose `fn` runs now, if any. */
  get running(): string | undefined {
    return this.#running;
  }

  /** `ctx.step(name, fn, options)`: the stored result of `fn`, run once per invocation (tried as `options.retry` says). */
  step(name: unknown, fn: unknown, options?: unknown): Promise<unknown> {
    const key = this.#key(name);
    if (typeof fn !== "function") {
      return Promise.reject(stepInvalid(`ctx.step("${key}", fn) needs a function to run`));
    }
    let policy: ResolvedRetryPolicy;
    try {
      policy = this.#policy(key, options);
    } catch (error) {
      return Promise.reject(error);
    }
    return this.#queue("ctx.step", key, () => this.#run(key, fn as (step: StepContext) => unknown, policy));
  }

  /** A step's retry policy: its own, or the function's. */
  #policy(key: string, options: unknown): ResolvedRetryPolicy {
    if (options === undefined) return this.#host.retry;
    if (!isPlainObject(options)) {
      throw stepInvalid(`ctx.step("${key}", fn, options): options is an object, got ${describe(options)}`);
    }
    const unknown = Object.keys(options).filter((name) => name !== "retry");
    if (unknown.length > 0) {
      throw stepInvalid(
        `ctx.step("${key}", fn, options) takes { retry }, not ${unknown.join(", ")}${unknown.includes("timeout") ? " (a step runs within its function's timeout)" : ""}`,
      );
    }
    const { retry } = options as StepOptions;
    if (retry === undefined) return this.#host.retry;
    try {
      return resolveRetryPolicy(retry);
    } catch (error) {
      throw stepInvalid(`ctx.step("${key}", fn, options): ${(error as Error).message}`);
    }
  }

  /**
   * `ctx.sleep` and `ctx.sleepUntil`: ends the run until `wakeAt` (epoch ms), unless the sleep's
   * memo says it is over. Records nothing when `wakeAt` has passed already.
   */
  sleep(name: unknown, wakeAt: number): Promise<void> {
    const key = this.#key(name);
    return this.#queue("ctx.sleep", key, () => this.#sleep(key, wakeAt)) as Promise<void>;
  }

  /**
   * `ctx.waitForEvent`: ends the run until an event `wait` describes is stored, or its timeout comes;
   * the run after resolves it to the event, or to null once the timeout came first.
   */
  waitForEvent(name: unknown, wait: WaitSpec): Promise<unknown> {
    const key = this.#key(name);
    return this.#queue("ctx.waitForEvent", key, () => this.#wait(key, wait));
  }

  /** Runs `work` once every step called before it has ended: steps run one after another, in call order. */
  #queue(api: string, key: string, work: () => Promise<unknown>): Promise<unknown> {
    if (this.#running !== undefined) {
      return Promise.reject(
        stepInvalid(
          `${api}("${key}") was called while step "${this.#running}" runs: steps cannot nest, and run one after another (call them in the same turn to queue them, as Promise.all does)`,
        ),
      );
    }
    const run = this.#tail.then(async (previousFailed) => {
      // After a failed step, the handler's reaction comes first: a run it ends starts no more steps.
      if (previousFailed) await new Promise((resolve) => setImmediate(resolve));
      return work();
    });
    this.#tail = run.then(
      () => false,
      () => true,
    );
    return run;
  }

  /**
   * The run ended (its handler returned, threw or was cut off): the step still running, if any,
   * rolls back now, so its connection and row locks do not outlive the run.
   */
  abandon(): void {
    void this.#transaction?.rollback().catch(() => undefined);
  }

  #key(name: unknown): string {
    if (typeof name !== "string" || name.length === 0 || name.length > MAX_NAME_LENGTH) {
      throw stepInvalid(`a step's name is 1-${MAX_NAME_LENGTH} characters, got ${describe(name)}`);
    }
    // Control, format (bidi overrides) and line separator characters: a name is shown in logs and audit lines.
    if (name.includes("#") || /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/u.test(name)) {
      throw stepInvalid(`a step's name is printable and has no "#", got ${JSON.stringify(name)}`);
    }
    const calls = (this.#calls.get(name) ?? 0) + 1;
    this.#calls.set(name, calls);
    return calls === 1 ? name : `${name}#${calls}`;
  }

  async #run(key: string, fn: (step: StepContext) => unknown, policy: ResolvedRetryPolicy): Promise<unknown> {
    this.#goOn(key);
    const { record } = this.#host;
    if (!record) return this.#runNow(key, fn);
    const memos = await this.#memosOf(record);
    const memo = memos.get(key);
    // A step whose attempt failed with attempts left runs again; any other memo answers.
    if (memo && !(memo.kind === "step" && memo.status === "retrying")) return this.#replay(key, memo);
    if (!memo) this.#checkRoom(key, memos);
    // A step queued behind one that failed the run, or called after a timeout, does not start.
    this.#goOn(key);
    const attempt = (memo?.attempts ?? 0) + 1;
    let json: string;
    try {
      json = await this.#runAndRecord(key, fn, record, { attempt, policy, seq: memo?.seq });
    } catch (error) {
      // Failed for good: recorded, so it counts as the invocation's next step.
      if ((error as JetfnError).code === "E_STEP_FAILED" && !memo) {
        memos.set(key, { kind: "step", value: null, status: "failed" });
        this.#lastSeq++;
      }
      throw error;
    }
    const value = JSON.parse(json);
    memos.set(key, { kind: "step", value, status: "succeeded" });
    return value;
  }

  /** The job's record, which a sleep or a wait wakes from: a call has none. */
  #recordToWakeFrom(api: string, key: string): JobRecord {
    const { record } = this.#host;
    if (!record) {
      throw stepInvalid(
        `${api}("${key}") works in jobs only: a call has no record to wake from (enqueue a job instead)`,
      );
    }
    return record;
  }

  async #sleep(key: string, wakeAt: number): Promise<void> {
    this.#goOn(key);
    const record = this.#recordToWakeFrom("ctx.sleep", key);
    const memos = await this.#memosOf(record);
    const memo = memos.get(key);
    if (memo) {
      if (memo.kind !== "sleep") throw mismatch(this.#label(key), "sleep", memo.kind);
      if (memo.status !== "sleeping") return;
      // Woken early (by the database's clock, which says when a sleep is over: runtimes' clocks may
      // differ): it sleeps again for the time left by that clock, at least a second, under the
      // sleep's next token.
      const seq = memo.seq ?? 0;
      const count = record.resume?.startsWith(`${seq}s`) ? sleepTokenCount(record.resume) : 0;
      const due = Date.now() + Math.ceil(Math.max(memo.wakeInMs ?? 0, EARLY_WAKE_MS));
      return this.#suspend(record, key, due, sleepToken(seq, count + 1));
    }
    if (wakeAt <= Date.now()) return;
    this.#checkRoom(key, memos);
    this.#goOn(key);
    // The token names the sleep by the seq it most likely gets (the database numbers it, under the record's lock).
    return this.#suspend(record, key, wakeAt, sleepToken(this.#lastSeq + 1, 1));
  }

  async #wait(key: string, wait: WaitSpec): Promise<unknown> {
    this.#goOn(key);
    const record = this.#recordToWakeFrom("ctx.waitForEvent", key);
    const memos = await this.#memosOf(record);
    const memo = memos.get(key);
    if (memo) {
      if (memo.kind !== "wait") throw mismatch(this.#label(key), "wait", memo.kind);
      if (memo.status === "matched") return memo.value;
      if (memo.status === "timed_out") return null;
      // Still waiting: this is its timeout's run, unless an event matched it first (then this run is stale).
      if (!(await this.#timeOut(record, key))) return this.#stop({ stale: true });
      memos.set(key, { ...memo, status: "timed_out", value: null });
      return null;
    }
    this.#checkRoom(key, memos);
    this.#goOn(key);
    // The token names the wait by its seq (the database numbers it, under the record's lock, and
    // refuses a wrong guess, JF008: then the seq it says is taken).
    let seq = this.#lastSeq + 1;
    let row: Record<string, unknown> | undefined;
    for (let tries = 1; ; tries++) {
      const token = waitTimeoutToken(seq);
      const resumption = this.#resumption(record, key, token, wait.timeoutAt);
      try {
        row = await this.#suspendWith(record, key, resumption, awaitStatement(record, key, wait, token));
        break;
      } catch (error) {
        if ((error as { code?: unknown }).code !== WRONG_SEQ_CODE) throw error;
        // Not recorded, and the handler must not go on past it.
        if (tries === 3) {
          throw this.#end(
            new JetfnError("E_HANDLER_FAILED", `${this.#label(key)}: the wait could not be recorded`, { cause: error }),
            false,
          );
        }
        seq = await this.#nextSeq(record.id);
      }
    }
    // Watch the event's name, and read again what was stored before the wait committed (met with nothing to match).
    const afterAt = new Date(row?.after_at as string).toISOString();
    await this.#catchUp({ invocationId: record.id, key, event: wait.event, afterAt });
    return this.#stop({ wakeAt: wait.timeoutAt, wait: { step: key, event: wait.event } });
  }

  /**
   * Matches the events stored since the wait's `afterAt` (see event-waiters.ts), trying again
   * through a blip of NATS or Postgres. Past that (or if this process dies first), the runtimes'
   * sweep of waits not caught up does it a few seconds later.
   */
  async #catchUp(wait: WaitToCatchUp): Promise<void> {
    const host = this.#host;
    const { key, event } = wait;
    for (let tries = 1; host.catchUpWait; tries++) {
      try {
        await host.catchUpWait(wait);
        return;
      } catch (error) {
        if (tries === CATCH_UP_TRIES) {
          host.log.error(
            { err: error, step: key, event },
            "The events stored before the wait began could not be read now; the runtimes' sweep reads them later.",
          );
          return;
        }
        await new Promise((resolve) => setTimeout(resolve, 500 * tries));
      }
    }
  }

  /** The seq the invocation's next step gets. */
  async #nextSeq(id: string): Promise<number> {
    const [row] = await this.#query(NEXT_SEQ_SQL, [id]);
    this.#lastSeq = Number(row?.last ?? 0);
    return this.#lastSeq + 1;
  }

  /** Ends a wait `timed_out` for the run of its timeout; false when an event matched it first. */
  async #timeOut(record: JobRecord, key: string): Promise<boolean> {
    const [row] = await this.#query(TIME_OUT_SQL, [record.id, key, record.resume ?? null]);
    return row?.timed_out === true;
  }

  /** One of the steps' own statements: a lost database makes the run go again without spending an attempt. */
  async #query(text: string, params: unknown[]): Promise<Awaited<ReturnType<Sql["unsafe"]>>> {
    try {
      return await this.#host.sql.unsafe(text, params as never[], { prepare: true });
    } catch (error) {
      if (isDatabaseLoss(error)) this.lost ??= "database";
      throw error;
    }
  }

  /** The memos, once the run may go on: a stale run (see #loadMemos) stops here, quietly. */
  async #memosOf(record: JobRecord): Promise<Map<string, Memo>> {
    const memos = await this.#loadMemos(record);
    if (this.#recordResume !== null && this.#recordResume !== (record.resume ?? null))
      return this.#stop({ stale: true });
    return memos;
  }

  #checkRoom(key: string, memos: Map<string, Memo>): void {
    if (memos.size >= MAX_STEPS) {
      throw new JetfnError(
        "E_STEP_LIMIT",
        `${this.#label(key)} would be step ${memos.size + 1}; an invocation records at most ${MAX_STEPS}`,
      );
    }
  }

  /**
   * Puts the invocation to sleep until `wakeAt`: the sleep's memo, the record `sleeping` with the
   * resumption's token, and the resumption's outbox row, in one statement; then the run ends.
   */
  async #suspend(record: JobRecord, key: string, wakeAt: number, token: string): Promise<never> {
    await this.#suspendWith(
      record,
      key,
      this.#resumption(record, key, token, wakeAt),
      suspendStatement(record, key, wakeAt, token),
    );
    return this.#stop({ wakeAt });
  }

  /**
   * Commits a suspension (`final`, a sleep's or a wait's) with its resumption's outbox row, and
   * publishes the row; resolves to the statement's row. A run another run went on from stops here.
   */
  async #suspendWith(
    record: JobRecord,
    key: string,
    resumption: OutboxMessage,
    final: FinalStatement,
  ): Promise<Record<string, unknown> | undefined> {
    const host = this.#host;
    const statement = outboxStatement([resumption], { functionName: record.fn, invocationId: record.id }, final);
    let row: Record<string, unknown> | undefined;
    try {
      [row] = await host.sql.unsafe(statement.text, statement.params as never[]);
    } catch (error) {
      const code = (error as { code?: unknown } | undefined)?.code;
      if (code === STEP_RECORDED_CODE || code === STALE_RUN_CODE) {
        // Another run suspended the invocation first, or holds a newer token: it carries on, not this one.
        const now = await this.#record(record.id).catch(() => undefined);
        if (now && (now.status === "sleeping" || now.status === "awaiting" || now.resume !== (record.resume ?? null))) {
          return this.#stop({ stale: true });
        }
        // Still this run's to go on with (or not known): it must not end quietly, nor go on past the
        // sleep, whatever the handler does with the error. Its next attempt sleeps again.
        throw this.#end(
          new JetfnError("E_HANDLER_FAILED", `${this.#label(key)}: its suspension could not be recorded`, {
            cause: error,
          }),
          false,
        );
      }
      throw await this.#commitFailure(record, undefined, error);
    }
    await host.publishCommitted([resumption]);
    return row;
  }

  /** Ends the run here: the step's promise never settles, and the host cuts the handler off. */
  #stop(suspension: Suspension): Promise<never> {
    this.suspension ??= suspension;
    const message = suspension.stale
      ? `${this.#host.functionName}'s run stopped: another run of its invocation went on from here`
      : suspension.retry !== undefined
        ? `${this.#label(suspension.retry.step)} failed; it runs again at ${new Date(suspension.wakeAt).toISOString()}`
        : suspension.wait !== undefined
          ? `${this.#host.functionName} waits for event ${suspension.wait.event} until ${new Date(suspension.wakeAt).toISOString()}`
          : `${this.#host.functionName} sleeps until ${new Date(suspension.wakeAt).toISOString()}`;
    this.#host.suspend(new JetfnError("E_SUSPENDED", message));
    return new Promise<never>(() => {});
  }

  /** Throws when the run may not go on to `key`. */
  #goOn(key: string): void {
    if (this.ending) throw this.ending.error;
    if (this.#host.ended)
      throw new JetfnError("E_HANDLER_FAILED", `${this.#label(key)} was reached after its run ended`);
  }

  /** A call has no record to keep memos in: its steps run at once, in its own transaction. */
  async #runNow(key: string, fn: (step: StepContext) => unknown): Promise<unknown> {
    const view = this.#host.stepContext(key, undefined, [], 1);
    this.#running = key;
    try {
      const returned = await fn(view);
      return JSON.parse(this.#json(key, returned));
    } finally {
      this.#running = undefined;
      view.close();
    }
  }

  /** Reads the invocation's memos, once per run (a later step reads what this run recorded itself). */
  #loadMemos(record: JobRecord): Promise<Map<string, Memo>> {
    this.#memos ??= this.#query(MEMOS_SQL, [record.id]).then((rows) => {
      const memos = new Map<string, Memo>();
      const first = rows[0];
      // Set once the invocation slept: only the run of its current resumption may go on.
      this.#recordResume = first?.resume ?? null;
      if (first && first.function !== record.fn) {
        throw this.#end(idConflictError(record.id, record.fn, first.function), false);
      }
      if (first?.final) {
        throw this.#end(endedError(record.id, first.record_status), first.record_status !== "cancelled");
      }
      for (const row of rows) {
        if (row.key === null) continue;
        const memo = memoOf(row);
        memos.set(row.key, memo);
        // Counted as the first run counted it (compact JSON), whatever spacing Postgres prints.
        this.#resultBytes += Buffer.byteLength(JSON.stringify(memo.value));
        this.#lastSeq = Math.max(this.#lastSeq, row.seq);
      }
      return memos;
    });
    return this.#memos;
  }

  #replay(key: string, memo: Memo): unknown {
    if (memo.kind !== "step") throw mismatch(this.#label(key), "step", memo.kind);
    // A step that failed for good fails the same way in every later run, at the same place.
    if (memo.status === "failed") throw stepFailed(this.#label(key), memo.attempts ?? 1, memo.error);
    return memo.value;
  }

  /**
   * Runs `fn` in a transaction of its own, and commits its writes with its memo; resolves to the
   * stored JSON. A failed attempt is recorded (see #failed).
   */
  async #runAndRecord(
    key: string,
    fn: (step: StepContext) => unknown,
    record: JobRecord,
    tries: StepTries,
  ): Promise<string> {
    const host = this.#host;
    const startedAt = isoNow();
    const transaction = host.ownTransaction(key, tries.attempt);
    const outbox: OutboxMessage[] = [];
    const view = host.stepContext(key, transaction, outbox, tries.attempt);
    let json = "";
    let failure: { error: unknown } | undefined;
    this.#running = key;
    this.#transaction = transaction;
    try {
      const returned = await fn(view);
      json = this.#json(key, returned);
      if (this.#resultBytes + Buffer.byteLength(json) > MAX_STEP_RESULT_BYTES) {
        throw new JetfnError(
          "E_STEP_LIMIT",
          `${this.#label(key)} would bring the invocation's stored step results past ${MAX_STEP_RESULT_BYTES} bytes`,
        );
      }
      // A step that outlived its run (cut off by the timeout) leaves its work to the next run.
      if (host.ended) throw new JetfnError("E_HANDLER_FAILED", `${this.#label(key)} ended after its run did`);
    } catch (error) {
      await transaction.rollback().catch(() => undefined);
      this.lost ??= transaction.lost;
      // A statement the guard refused fails the run, whatever the handler does with the error.
      if (transaction.refused) throw this.#end(transaction.refused, false);
      failure = { error };
    } finally {
      this.#running = undefined;
      this.#transaction = undefined;
      // Its outbox rows go with its commit: an enqueue made later would be lost, so it is refused.
      view.close();
    }
    if (failure) return this.#failed(key, record, tries, startedAt, failure.error);
    const final = recordStepStatement(record, key, json, startedAt);
    const statement =
      outbox.length > 0 ? outboxStatement(outbox, { functionName: record.fn, invocationId: record.id }, final) : final;
    try {
      await commitWith(host.sql, transaction, statement);
    } catch (error) {
      const code = (error as { code?: unknown } | undefined)?.code;
      if (code === STEP_RECORDED_CODE) return this.#winner(key, record);
      // The invocation went to sleep since this run read its memos: the run is a stale copy.
      if (code === STALE_RUN_CODE) return this.#stop({ stale: true });
      // A COMMIT the database refused (a deferred constraint, a serialization failure) fails the attempt.
      return this.#failed(key, record, tries, startedAt, await this.#commitFailure(record, transaction, error));
    }
    this.#resultBytes += Buffer.byteLength(json);
    // A step tried again keeps the seq it has.
    if (tries.seq === undefined) this.#lastSeq++;
    // The step's own error, if it lost the database, is behind it now.
    this.lost = undefined;
    if (outbox.length > 0) await host.publishCommitted(outbox);
    return json;
  }

  /** What a step's failed commit means for the run: the error ctx.step throws. */
  async #commitFailure(
    record: JobRecord,
    transaction: InvocationTransaction | undefined,
    error: unknown,
  ): Promise<unknown> {
    const code = (error as { code?: unknown } | undefined)?.code;
    if (code === ID_CONFLICT_CODE) return this.#end(idConflictError(record.id, record.fn, undefined, error), false);
    if (code === FENCED_OUT_CODE) {
      const status = (await this.#record(record.id).catch(() => undefined))?.status;
      return this.#end(endedError(record.id, status, error), status !== "cancelled");
    }
    // A statement the guard refused fails the attempt, whatever the handler does with the error.
    if (code === "E_STATEMENT_REFUSED") return this.#end(error as JetfnError, false);
    if (transaction?.lost || isDatabaseLoss(error)) this.lost ??= "database";
    return error;
  }

  /**
   * A step's attempt failed (`thrown`): recorded in its row, outside its rolled-back transaction.
   * With attempts left the run ends, and a resumption runs the step again after the backoff;
   * without, ctx.step throws E_STEP_FAILED (and so does every later run, from the memo). What is
   * not the step's own failure passes as it is: the run ended or was told to stop, the database was
   * lost (the run goes again), or the code broke a step rule. A result JSON cannot hold
   * (E_OUTPUT_INVALID, E_PAYLOAD_TOO_LARGE) fails the step at once, as NonRetryableError does.
   */
  async #failed(key: string, record: JobRecord, tries: StepTries, startedAt: string, thrown: unknown): Promise<string> {
    const host = this.#host;
    const code = (thrown as { code?: unknown } | undefined)?.code;
    if (this.ending || this.lost || host.ended || host.stopped || STEP_RULE_CODES.has(code as string)) throw thrown;
    const error = toJetfnError(thrown);
    const { attempt, policy } = tries;
    const stored: StoredError = { ...storedError(error, attempt), step: key };
    const fields = { step: key, stepAttempt: attempt, ...failureFields(error) };
    if (!isRetryable(error.code) || attempt >= policy.attempts) {
      const json = await this.#recordFailure(key, record, tries, startedAt, stored, undefined);
      if (json !== undefined) return json;
      host.log.warn(
        fields,
        `${this.#label(key)} failed on attempt ${attempt} of ${policy.attempts} (${error.message}); it is not tried again.`,
      );
      throw stepFailed(this.#label(key), attempt, stored, error);
    }
    const delayMs =
      error.code === "E_RETRY_LATER" && typeof (error as { delayMs?: unknown }).delayMs === "number"
        ? (error as unknown as { delayMs: number }).delayMs
        : backoffDelay(policy, attempt);
    const retryAt = Date.now() + delayMs;
    // Named by the seq the step has, or most likely gets (the database numbers it, under the record's lock).
    const retry = { at: retryAt, token: retryToken(tries.seq ?? this.#lastSeq + 1, attempt + 1) };
    const json = await this.#recordFailure(key, record, tries, startedAt, stored, retry);
    if (json !== undefined) return json;
    host.log.warn(
      { ...fields, retryInMs: delayMs },
      `${this.#label(key)} failed on attempt ${attempt} of ${policy.attempts} (${error.message}); it runs again in ${formatDuration(delayMs)}.`,
    );
    return this.#stop({ wakeAt: retryAt, retry: { step: key, error } });
  }

  /**
   * Records a step's failed attempt (jetfn.record_step_failure), with the resumption of its retry
   * when one follows. Resolves to undefined once recorded, or to the step's result when another run
   * recorded it succeeded first; a run that lost to another run of the step stops here.
   */
  async #recordFailure(
    key: string,
    record: JobRecord,
    tries: StepTries,
    startedAt: string,
    stored: StoredError,
    retry: { at: number; token: string } | undefined,
  ): Promise<string | undefined> {
    const host = this.#host;
    const final: FinalStatement = {
      text: STEP_FAILURE_SQL,
      params: [
        ...recordParams(record),
        key,
        tries.attempt,
        storableJson(stored),
        startedAt,
        record.resume ?? null,
        retry ? new Date(retry.at).toISOString() : null,
        retry?.token ?? null,
      ],
    };
    const resumption = retry && this.#resumption(record, key, retry.token, retry.at);
    const statement = resumption
      ? outboxStatement([resumption], { functionName: record.fn, invocationId: record.id }, final)
      : final;
    try {
      await commitWith(host.sql, undefined, statement);
    } catch (error) {
      const code = (error as { code?: unknown } | undefined)?.code;
      // Another run of this attempt recorded the step first: its outcome counts.
      if (code === STEP_RECORDED_CODE) return this.#winner(key, record);
      if (code === STALE_RUN_CODE) return this.#stop({ stale: true });
      throw await this.#commitFailure(record, undefined, error);
    }
    if (resumption) await host.publishCommitted([resumption]);
    return undefined;
  }

  /** The resumption with `token` of the invocation, due at `wakeAt`, as an outbox row. */
  #resumption(record: JobRecord, key: string, token: string, wakeAt: number): OutboxMessage {
    const secret = this.#host.resumeSecret;
    if (secret === undefined) {
      throw stepInvalid(`${this.#label(key)} needs a runtime to resume the job: this one has no resumption secret`);
    }
    return resumptionMessage(secret, {
      fn: record.fn,
      id: record.id,
      token,
      notBefore: wakeAt,
      priority: record.labels?.priority,
    });
  }

  /** Another run recorded the step first: its writes were rolled back, and the winner's memo counts. */
  async #winner(key: string, record: JobRecord): Promise<string> {
    const [row] = await this.#query(MEMO_SQL, [record.id, key]);
    if (!row) throw new JetfnError("E_STEP_MISMATCH", `${this.#label(key)} was recorded and then lost`);
    // It recorded a later attempt's failure: the step's next attempt belongs to the resumption it sent.
    if (row.kind === "step" && row.status === "retrying") return this.#stop({ stale: true });
    this.#host.log.info({ step: key }, "Another run of this invocation recorded the step first; its outcome is used.");
    const json = JSON.stringify(this.#replay(key, memoOf(row)));
    this.#resultBytes += Buffer.byteLength(json);
    this.#lastSeq = Math.max(this.#lastSeq, row.seq);
    return json;
  }

  /** A step's result as stored JSON (see storedJson); one JSON cannot hold fails the step with E_OUTPUT_INVALID. */
  #json(key: string, returned: unknown): string {
    const json = resultJson(returned ?? null, this.#label(key), this.#host.maxPayload);
    try {
      return storedJson(json);
    } catch (error) {
      throw new JetfnError("E_OUTPUT_INVALID", `the result of ${this.#label(key)} cannot be stored as JSON`, {
        cause: error,
      });
    }
  }

  async #record(id: string): Promise<{ status: string; resume: string | null } | undefined> {
    const [row] = await this.#host.sql.unsafe(RECORD_STATUS_SQL, [id], { prepare: true });
    return row as { status: string; resume: string | null } | undefined;
  }

  #end(error: JetfnError, fenced: boolean): JetfnError {
    this.ending ??= { error, fenced };
    return this.ending.error;
  }

  #label(key: string): string {
    return `step "${key}" of ${this.#host.functionName}`;
  }
}

/** What `ctx.waitForEvent` waits for, checked (see waitSpec). */
export interface WaitSpec {
  event: string;
  /** The match's dotted paths, sorted. */
  paths: string[];
  /** Their values, in the paths' order. */
  values: unknown[];
  /** When the wait times out (epoch ms). */
  timeoutAt: number;
}

/**
 * Checks `ctx.waitForEvent`'s options: `event` (a name without wildcards, or a defineEvent), `match`
 * (a flat object of up to 8 dotted paths and scalar values), `timeout` (required, at most `maxMs`).
 */
export function waitSpec(
  key: unknown,
  options: unknown,
  parseTimeout: (timeout: unknown) => number,
  maxMs: number,
): WaitSpec {
  const api = `ctx.waitForEvent(${JSON.stringify(typeof key === "string" ? key : String(key))})`;
  if (!isPlainObject(options)) throw stepInvalid(`${api} takes { event, match?, timeout }`);
  const { event, match, timeout } = options as { event?: unknown; match?: unknown; timeout?: unknown };
  const name = isPlainObject(event) ? (event as { name?: unknown }).name : event;
  if (typeof name !== "string" || !isValidEventName(name)) {
    throw stepInvalid(`${api}: event is an event's name (no wildcards) or a defineEvent, got ${describe(name)}`);
  }
  const entries = match === undefined ? [] : isPlainObject(match) ? Object.entries(match) : undefined;
  if (entries === undefined || entries.length > MAX_MATCH_PATHS) {
    throw stepInvalid(`${api}: match is a flat object of up to ${MAX_MATCH_PATHS} dotted paths and their values`);
  }
  for (const [path, value] of entries) {
    if (!MATCH_PATH.test(path)) throw stepInvalid(`${api}: match path ${JSON.stringify(path)} is not a dotted path`);
    const scalar =
      value === null ||
      typeof value === "string" ||
      typeof value === "boolean" ||
      (typeof value === "number" && Number.isFinite(value));
    if (!scalar) throw stepInvalid(`${api}: match.${path} is a string, a number, a boolean or null`);
    if (typeof value === "string" && storableJson(value) !== JSON.stringify(value)) {
      throw stepInvalid(`${api}: match.${path} holds a character Postgres cannot store (NUL, a lone surrogate)`);
    }
  }
  if (Buffer.byteLength(JSON.stringify(entries)) > MAX_MATCH_BYTES) {
    throw stepInvalid(`${api}: match is at most ${MAX_MATCH_BYTES} bytes, paths and values together`);
  }
  if (timeout === undefined) throw stepInvalid(`${api} needs a timeout (at most a year)`);
  let timeoutMs: number;
  try {
    timeoutMs = parseTimeout(timeout);
  } catch (error) {
    throw stepInvalid(`${api}: timeout: ${(error as Error).message}`);
  }
  if (!(timeoutMs > 0) || timeoutMs > maxMs)
    throw stepInvalid(`${api}: a wait's timeout is more than 0 and at most a year`);
  entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return {
    event: name,
    paths: entries.map(([path]) => path),
    values: entries.map(([, value]) => value),
    timeoutAt: Date.now() + timeoutMs,
  };
}

/** The wait's statement, last of the run that reached it (see 0037_jetfn_wait_for_event.sql). */
function awaitStatement(record: JobRecord, key: string, wait: WaitSpec, token: string): FinalStatement {
  return {
    text: AWAIT_SQL,
    params: [
      ...recordParams(record),
      key,
      wait.event,
      JSON.stringify(wait.paths),
      JSON.stringify(wait.values),
      new Date(wait.timeoutAt).toISOString(),
      token,
      record.resume ?? null,
    ],
  };
}

/** The memo's statement, last in the step's transaction (see 0032_jetfn_steps.sql). */
function recordStepStatement(record: JobRecord, key: string, json: string, startedAt: string): FinalStatement {
  return {
    text: RECORD_STEP_SQL,
    params: [...recordParams(record), key, json, startedAt, record.resume ?? null],
    inlinable: true,
  };
}

/** The sleep's memo statement, last of its run (see 0034_jetfn_sleep.sql). */
function suspendStatement(record: JobRecord, key: string, wakeAt: number, token: string): FinalStatement {
  return {
    text: SUSPEND_SQL,
    params: [...recordParams(record), key, new Date(wakeAt).toISOString(), token, record.resume ?? null],
  };
}

/** What a memo's statement writes of the job's record, if it makes it (its first 11 parameters). */
function recordParams(record: JobRecord): unknown[] {
  const labels = record.labels;
  return [
    record.id,
    record.fn,
    record.attempt,
    storableJson(record.input),
    record.enqueuedAt,
    record.startedAt,
    record.streamSeq,
    record.retryOf ?? null,
    labels?.priority ?? null,
    labels?.debounceKey ?? null,
    labels?.singletonKey ?? null,
  ];
}

/** A step's row (of MEMOS_SQL or MEMO_SQL) as a run reads it: its result and its error parsed. */
function memoOf(row: Record<string, unknown>): Memo {
  return {
    kind: row.kind as string,
    value: row.result === null ? null : JSON.parse(row.result as string),
    seq: row.seq as number,
    wakeInMs: (row.wake_in_ms as number | null | undefined) ?? undefined,
    status: row.status as string,
    attempts: row.attempts as number,
    error: row.error === null || row.error === undefined ? undefined : (JSON.parse(row.error as string) as StoredError),
  };
}

/** How a step's attempt runs: which attempt it is, under which policy, and the step's seq if it has a row. */
interface StepTries {
  attempt: number;
  policy: ResolvedRetryPolicy;
  seq: number | undefined;
}

/**
 * What ctx.step throws for a step that failed for good: its last error as `cause` (the error itself
 * in the run that failed it, or as stored for later runs, which throw it again at the same place).
 */
function stepFailed(label: string, attempts: number, stored: StoredError | undefined, error?: JetfnError): JetfnError {
  const cause =
    error ??
    Object.assign(new JetfnError((stored?.code ?? "E_HANDLER_FAILED") as never, stored?.message ?? "unknown"), {
      name: stored?.name ?? "Error",
    });
  return new JetfnError(
    "E_STEP_FAILED",
    `${label} failed after ${attempts} attempt${attempts === 1 ? "" : "s"}: ${cause.message}`,
    { cause },
  );
}

function mismatch(label: string, inCode: string, recorded: string): JetfnError {
  return new JetfnError(
    "E_STEP_MISMATCH",
    `${label} is a ${inCode} in the code, but the invocation recorded a ${recorded} under that key: the code changed in a way its history cannot follow`,
  );
}

/**
 * Why a run found its invocation ended: cancelled (E_CANCELLED, so the runner ends the job as
 * cancelled), or finished by another attempt (the run is fenced out).
 */
function endedError(id: string, status: string | undefined, cause?: unknown): JetfnError {
  const options = cause === undefined ? undefined : { cause };
  if (status === "cancelled")
    return new JetfnError("E_CANCELLED", `job ${id} was cancelled while it ran its steps`, options);
  return new JetfnError("E_HANDLER_FAILED", `invocation ${id} has already ended; this run records nothing`, options);
}

/**
 * A step's result as a later run reads it back from `jsonb`, which keeps an object's keys shorter
 * first, then by their UTF-8 bytes: the run that made the value gets the same key order as every
 * later run, so a loop over a step's object calls the same steps in the same order in each.
 */
export function storedJson(json: string): string {
  if (!json.includes("{")) return json;
  return JSON.stringify(
    JSON.parse(json, (_key, value: unknown) => (isPlainObject(value) ? jsonbOrdered(value) : value)),
  );
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function jsonbOrdered(object: Record<string, unknown>): Record<string, unknown> {
  const keys = Object.keys(object).map((key) => ({ key, bytes: Buffer.from(key) }));
  keys.sort((a, b) => a.bytes.length - b.bytes.length || Buffer.compare(a.bytes, b.bytes));
  // fromEntries defines each key, "__proto__" too, where an assignment would set the prototype.
  return Object.fromEntries(keys.map(({ key }) => [key, object[key]]));
}

export function stepInvalid(message: string): JetfnError {
  return new JetfnError("E_STEP_INVALID", message);
}

function describe(value: unknown): string {
  return typeof value === "string" ? `${value.length} characters` : typeof value;
}
