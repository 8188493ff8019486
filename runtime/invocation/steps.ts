import type { Logger } from "pino";
import type { Sql } from "postgres";
import { isConnectionError } from "../db/client";
import { FENCED_OUT_CODE, ID_CONFLICT_CODE, idConflictError, type JobRecord } from "../db/invocation-store";
import type { FinalStatement, InvocationTransaction, TransactionLoss } from "../db/invocation-transaction";
import { outboxStatement } from "../db/outbox";
import { shouldPrepare } from "../db/prepared-statements";
import { storableJson } from "../db/storable-json";
import { isUnanswered } from "../db/transaction-parts";
import type { OutboxMessage } from "../outbox/outbox-message";
import type { StepContext } from "../sdk/define-function";
import { JetfnError } from "../support/errors";
import { resultJson } from "./result-json";

/** Most steps one invocation may record (docs/durable-steps.md#what-a-step-returns). */
export const MAX_STEPS = 1_000;
/** Most bytes of stored step results one invocation may hold: every run reads them all. */
export const MAX_STEP_RESULT_BYTES = 16 * 1024 * 1024;
const MAX_NAME_LENGTH = 100;

/** Postgres error code of `jetfn.record_step` when another run recorded the step first. */
export const STEP_RECORDED_CODE = "JF004";

const RECORD_STEP_SQL =
  "select jetfn.record_step($1, $2, $3, $4::jsonb, $5, $6, $7, $8, $9::smallint, $10, $11, $12, $13::jsonb, $14)";
const MEMOS_SQL =
  "select i.function, jetfn.is_final(i.status) as final, s.key, s.kind, s.status, s.result::text as result " +
  "from jetfn.invocations i left join jetfn.steps s on s.invocation_id = i.id where i.id = $1 order by s.seq";
const MEMO_SQL = "select kind, status, result::text as result from jetfn.steps where invocation_id = $1 and key = $2";

/** A step's row, as a later run reads it. */
interface Memo {
  kind: string;
  status: string;
  /** The stored JSON of its result. */
  result: string | null;
}

/** What the steps of one invocation need from it. */
export interface StepHost {
  readonly sql: Sql;
  readonly functionName: string;
  readonly maxPayload: number | undefined;
  /** The job's record, which the first step creates; undefined for a call, whose steps run at once. */
  readonly record: JobRecord | undefined;
  /** A transaction of the step's own, stamped as the invocation's. */
  ownTransaction(): InvocationTransaction;
  /** What the step's `fn` gets, over its transaction and its outbox rows. */
  stepContext(key: string, transaction: InvocationTransaction | undefined, outbox: OutboxMessage[]): StepContext;
  /** The run ended (its handler timed out or failed): a step still running then commits nothing. */
  readonly ended: boolean;
  /** Publishes outbox rows a step committed; the relay's sweep is the fallback. */
  publishCommitted(messages: OutboxMessage[]): Promise<void>;
  log: Logger;
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
  /** The end of the last step called: the next one starts after it. */
  #tail: Promise<unknown> = Promise.resolve();
  /** The key of the step whose `fn` runs now. */
  #running: string | undefined;
  /** Why the run cannot go on: its invocation ended, or its id is another function's. */
  fenced: JetfnError | undefined;
  /** A step's transaction was lost with the database: the run is tried again without spending an attempt. */
  lost: TransactionLoss | undefined;

  constructor(host: StepHost) {
    this.#host = host;
  }

  /** `ctx.step(name, fn)`: the stored result of `fn`, run once per invocation. */
  step(name: unknown, fn: unknown): Promise<unknown> {
    const key = this.#key(name);
    if (typeof fn !== "function") {
      return Promise.reject(stepInvalid(`ctx.step("${key}", fn) needs a function to run`));
    }
    if (this.#running !== undefined) {
      return Promise.reject(
        stepInvalid(
          `ctx.step("${key}") was called while step "${this.#running}" runs: steps cannot nest, and run one after another (call them in the same turn to queue them, as Promise.all does)`,
        ),
      );
    }
    const run = this.#tail.then(() => this.#run(key, fn as (step: StepContext) => unknown));
    this.#tail = run.catch(() => undefined);
    return run;
  }

  #key(name: unknown): string {
    if (typeof name !== "string" || name.length === 0 || name.length > MAX_NAME_LENGTH) {
      throw stepInvalid(`a step's name is 1-${MAX_NAME_LENGTH} characters, got ${describe(name)}`);
    }
    // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what is refused
    if (name.includes("#") || /[\u0000-\u001f\u007f]/.test(name)) {
      throw stepInvalid(`a step's name is printable and has no "#", got ${JSON.stringify(name)}`);
    }
    const calls = (this.#calls.get(name) ?? 0) + 1;
    this.#calls.set(name, calls);
    return calls === 1 ? name : `${name}#${calls}`;
  }

  async #run(key: string, fn: (step: StepContext) => unknown): Promise<unknown> {
    if (this.fenced) throw this.fenced;
    const { record } = this.#host;
    if (!record) return this.#runNow(key, fn);
    const memos = await this.#loadMemos(record).catch((error: unknown) => {
      if (isConnectionError(error) || isUnanswered(error)) this.lost ??= "database";
      throw error;
    });
    const memo = memos.get(key);
    if (memo) return this.#replay(key, memo);
    if (memos.size >= MAX_STEPS) {
      throw new JetfnError(
        "E_STEP_LIMIT",
        `${this.#label(key)} would be step ${memos.size + 1}; an invocation records at most ${MAX_STEPS}`,
      );
    }
    const json = await this.#runAndRecord(key, fn, record);
    memos.set(key, { kind: "step", status: "succeeded", result: json });
    return JSON.parse(json);
  }

  /** A call has no record to keep memos in: its steps run at once, in its own transaction. */
  async #runNow(key: string, fn: (step: StepContext) => unknown): Promise<unknown> {
    this.#running = key;
    try {
      const returned = await fn(this.#host.stepContext(key, undefined, []));
      return JSON.parse(resultJson(returned ?? null, this.#label(key), this.#host.maxPayload));
    } finally {
      this.#running = undefined;
    }
  }

  /** Reads the invocation's memos, once per run (a later step reads what this run recorded itself). */
  #loadMemos(record: JobRecord): Promise<Map<string, Memo>> {
    this.#memos ??= this.#host.sql.unsafe(MEMOS_SQL, [record.id], { prepare: true }).then((rows) => {
      const memos = new Map<string, Memo>();
      const first = rows[0];
      if (first && first.function !== record.fn)
        throw this.#fence(idConflictError(record.id, record.fn, first.function));
      if (first?.final) throw this.#fence(alreadyEnded(record.id));
      for (const row of rows) {
        if (row.key === null) continue;
        memos.set(row.key, { kind: row.kind, status: row.status, result: row.result });
        this.#resultBytes += row.result === null ? 0 : Buffer.byteLength(row.result);
      }
      return memos;
    });
    return this.#memos;
  }

  #replay(key: string, memo: Memo): unknown {
    if (memo.kind !== "step") {
      throw new JetfnError(
        "E_STEP_MISMATCH",
        `${this.#label(key)} is a step in the code, but the invocation recorded a ${memo.kind} under that key: the code changed in a way its history cannot follow`,
      );
    }
    return memo.result === null ? null : JSON.parse(memo.result);
  }

  /** Runs `fn` in a transaction of its own, and commits its writes with its memo. */
  async #runAndRecord(key: string, fn: (step: StepContext) => unknown, record: JobRecord): Promise<string> {
    const host = this.#host;
    const startedAt = new Date().toISOString();
    const transaction = host.ownTransaction();
    const outbox: OutboxMessage[] = [];
    let json: string;
    this.#running = key;
    try {
      const returned = await fn(host.stepContext(key, transaction, outbox));
      json = resultJson(returned ?? null, this.#label(key), host.maxPayload);
      this.#resultBytes += Buffer.byteLength(json);
      if (this.#resultBytes > MAX_STEP_RESULT_BYTES) {
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
      throw error;
    } finally {
      this.#running = undefined;
    }
    const final = recordStepStatement(record, key, json, startedAt);
    const statement =
      outbox.length > 0 ? outboxStatement(outbox, { functionName: record.fn, invocationId: record.id }, final) : final;
    try {
      if (transaction.begun) await transaction.commit(statement);
      else {
        await transaction.commit();
        await host.sql.unsafe(statement.text, statement.params as never[], {
          prepare: shouldPrepare(host.sql, statement.text),
        });
      }
    } catch (error) {
      const code = (error as { code?: unknown } | undefined)?.code;
      if (code === STEP_RECORDED_CODE) return this.#winner(key, record);
      if (code === FENCED_OUT_CODE) throw this.#fence(alreadyEnded(record.id), error);
      if (code === ID_CONFLICT_CODE) throw this.#fence(idConflictError(record.id, record.fn, undefined, error));
      if (transaction.lost || isConnectionError(error) || isUnanswered(error)) this.lost ??= "database";
      throw error;
    }
    if (outbox.length > 0) await host.publishCommitted(outbox);
    return json;
  }

  /** Another run recorded the step first: its writes were rolled back, and the winner's memo counts. */
  async #winner(key: string, record: JobRecord): Promise<string> {
    const [memo] = await this.#host.sql.unsafe(MEMO_SQL, [record.id, key], { prepare: true });
    this.#host.log.info({ step: key }, "Another run of this invocation recorded the step first; its result is used.");
    if (!memo) throw new JetfnError("E_STEP_MISMATCH", `${this.#label(key)} was recorded and then lost`);
    const json = this.#replay(key, memo as unknown as Memo);
    return JSON.stringify(json);
  }

  #fence(error: JetfnError, cause?: unknown): JetfnError {
    if (cause !== undefined && error.cause === undefined) Object.defineProperty(error, "cause", { value: cause });
    this.fenced = error;
    return error;
  }

  #label(key: string): string {
    return `step "${key}" of ${this.#host.functionName}`;
  }
}

/** The memo's statement, last in the step's transaction (see 0032_jetfn_steps.sql). */
function recordStepStatement(record: JobRecord, key: string, json: string, startedAt: string): FinalStatement {
  const labels = record.labels;
  return {
    text: RECORD_STEP_SQL,
    params: [
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
      key,
      json,
      startedAt,
    ],
    inlinable: true,
  };
}

/** The invocation ended (another attempt finished it, or it was cancelled): this run is fenced out. */
function alreadyEnded(id: string): JetfnError {
  return new JetfnError("E_HANDLER_FAILED", `invocation ${id} has already ended; this run records nothing`);
}

export function stepInvalid(message: string): JetfnError {
  return new JetfnError("E_STEP_INVALID", message);
}

function describe(value: unknown): string {
  return typeof value === "string" ? `${value.length} characters` : typeof value;
}
