import { drizzle } from "drizzle-orm/postgres-js";
import type { ReservedSql, Sql } from "postgres";
import type { InvocationDatabase } from "../define-function";
import { JetfnError } from "../errors";

/** Who is writing: read by the audit triggers through transaction-local settings. */
export interface TransactionStamp {
  functionName: string;
  invocationId: string;
  attempt: number;
  /** Postgres cancels any statement running longer (the invocation's remaining time). */
  statementTimeoutMs: number;
}

/** A statement run just before COMMIT, in the same round trip (the job's final record). */
export interface FinalStatement {
  text: string;
  params: unknown[];
}

/**
 * One invocation's transaction. Nothing touches Postgres until the handler's first query; that
 * query is pipelined behind BEGIN and the stamp, and the final statement is pipelined with COMMIT,
 * so a job writing one row costs two round trips instead of four.
 */
export interface InvocationTransaction {
  readonly db: InvocationDatabase;
  /** True once the handler made a query (and so a transaction exists). */
  readonly begun: boolean;
  /** Runs `final` and COMMIT together; throws if either fails (the transaction is then rolled back). */
  commit(final?: FinalStatement): Promise<void>;
  /** Rolls back; further queries through `db` fail. */
  rollback(): Promise<void>;
}

const STAMP_SQL =
  "select set_config('jetfn.function', $1, true), set_config('jetfn.invocation_id', $2, true), " +
  "set_config('jetfn.attempt', $3, true), set_config('statement_timeout', $4, true)";

/** Creates a lazy transaction on `sql`'s pool for one invocation. */
export function createInvocationTransaction(sql: Sql, stamp: TransactionStamp): InvocationTransaction {
  return new LazyTransaction(sql, stamp);
}

type QueryMode = "rows" | "values";

/**
 * Longest a COMMIT (or ROLLBACK) may take before its connection is given up. A connection killed
 * at the wrong moment can leave the driver waiting forever (porsager/postgres#1208); without a
 * bound the job would hang, kept alive by its in-progress pings. After it, the attempt counts as
 * a database loss and runs again on a fresh connection; the fence settles a COMMIT that did land.
 */
export const COMMIT_DEADLINE_MS = 15_000;
export const ROLLBACK_DEADLINE_MS = 5_000;

async function withinDeadline<T>(work: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(
          new JetfnError(
            "E_DATABASE_UNAVAILABLE",
            `Postgres did not answer ${what} within ${ms / 1000}s; the connection is abandoned`,
          ),
        ),
      ms,
    );
  });
  try {
    return await Promise.race([work, expired]);
  } finally {
    clearTimeout(timer);
  }
}

class LazyTransaction implements InvocationTransaction {
  readonly #client: unknown;
  #db: InvocationDatabase | undefined;
  readonly #sql: Sql;
  readonly #stamp: TransactionStamp;
  #connection: Promise<ReservedSql> | undefined;
  #setup: Promise<unknown> = Promise.resolve();
  #closed = false;
  #savepoints = 0;

  constructor(sql: Sql, stamp: TransactionStamp) {
    this.#sql = sql;
    this.#stamp = stamp;
    // drizzle drives this object exactly as it drives a postgres.js client.
    const client = {
      options: sql.options,
      unsafe: (text: string, params?: unknown[], options?: { prepare?: boolean }) => this.#query(text, params, options),
      begin: (first: unknown, second?: unknown) =>
        this.#savepoint((typeof first === "function" ? first : second) as SavepointCallback),
      savepoint: (callback: SavepointCallback) => this.#savepoint(callback),
    };
    this.#client = client;
  }

  /** Built on first use: a handler that never touches the database never pays for drizzle. */
  get db(): InvocationDatabase {
    this.#db ??= drizzle(this.#client as Sql) as InvocationDatabase;
    return this.#db;
  }

  get begun(): boolean {
    return this.#connection !== undefined;
  }

  async commit(final?: FinalStatement): Promise<void> {
    this.#closed = true;
    if (!this.#connection) return;
    const connection = await this.#connection;
    // COMMIT ends the transaction whatever happens (Postgres rolls back a failed one itself), and
    // the connection goes back to the pool: a later rollback() must not touch it.
    this.#connection = undefined;
    let answered = false;
    try {
      const finalQuery = final ? connection.unsafe(final.text, final.params as never[]).execute() : Promise.resolve();
      const commitQuery = connection.unsafe("commit").execute();
      const [setup, finalResult, commitResult] = await withinDeadline(
        Promise.allSettled([this.#setup, finalQuery, commitQuery]),
        COMMIT_DEADLINE_MS,
        "COMMIT",
      );
      answered = true;
      if (setup.status === "rejected") throw setup.reason;
      if (finalResult.status === "rejected") throw finalResult.reason;
      if (commitResult.status === "rejected") throw commitResult.reason;
      if ((commitResult.value as { command?: string }).command === "ROLLBACK") {
        throw new JetfnError(
          "E_HANDLER_FAILED",
          "a statement failed inside the invocation's transaction (its error was caught by the handler), so Postgres rolled the transaction back",
        );
      }
    } finally {
      // A connection that never answered may be dead without the driver knowing: never reuse it.
      if (answered) connection.release();
    }
  }

  async rollback(): Promise<void> {
    this.#closed = true;
    if (!this.#connection) return;
    const connection = await this.#connection.catch(() => undefined);
    if (!connection) return;
    // A broken connection rolls back on the server by itself; nothing to report.
    const answered = await withinDeadline(
      connection.unsafe("rollback").execute(),
      ROLLBACK_DEADLINE_MS,
      "ROLLBACK",
    ).then(
      () => true,
      (error: unknown) => (error as JetfnError).code !== "E_DATABASE_UNAVAILABLE",
    );
    if (answered) connection.release();
  }

  #query(text: string, params: unknown[] = [], options?: { prepare?: boolean }): LazyQuery {
    return new LazyQuery(async (mode) => {
      const connection = await this.#open();
      const query = connection.unsafe(text, params as never[], options);
      return mode === "values" ? await query.values() : await query;
    });
  }

  #open(): Promise<ReservedSql> {
    if (this.#closed) {
      return Promise.reject(
        new JetfnError("E_HANDLER_TIMEOUT", "the invocation already ended; its transaction no longer accepts queries"),
      );
    }
    this.#connection ??= this.#begin();
    return this.#connection;
  }

  async #begin(): Promise<ReservedSql> {
    const connection = await this.#sql.reserve();
    const { functionName, invocationId, attempt, statementTimeoutMs } = this.#stamp;
    // Sent now, without waiting: they travel in the same write as the handler's first query.
    const begin = connection.unsafe("begin").execute();
    const stamp = connection
      .unsafe(STAMP_SQL, [functionName, invocationId, String(attempt), String(Math.max(1, statementTimeoutMs))])
      .execute();
    this.#setup = Promise.all([begin, stamp]);
    this.#setup.catch(() => undefined);
    return connection;
  }

  async #savepoint(callback: SavepointCallback): Promise<unknown> {
    const name = `jetfn_savepoint_${++this.#savepoints}`;
    await this.#query(`savepoint ${name}`);
    try {
      const result = await callback(this.#client);
      await this.#query(`release savepoint ${name}`);
      return result;
    } catch (error) {
      await this.#query(`rollback to savepoint ${name}`);
      throw error;
    }
  }
}

type SavepointCallback = (client: unknown) => Promise<unknown>;

/** A query that runs when awaited, like postgres.js's own; `.values()` asks for rows as arrays. */
class LazyQuery implements PromiseLike<unknown> {
  readonly #run: (mode: QueryMode) => Promise<unknown>;
  #mode: QueryMode = "rows";
  #promise: Promise<unknown> | undefined;

  constructor(run: (mode: QueryMode) => Promise<unknown>) {
    this.#run = run;
  }

  values(): this {
    this.#mode = "values";
    return this;
  }

  // biome-ignore lint/suspicious/noThenProperty: drizzle awaits this object like a postgres.js query.
  then<A = unknown, B = never>(
    onFulfilled?: ((value: unknown) => A | PromiseLike<A>) | null,
    onRejected?: ((reason: unknown) => B | PromiseLike<B>) | null,
  ): Promise<A | B> {
    this.#promise ??= this.#run(this.#mode);
    return this.#promise.then(onFulfilled, onRejected);
  }

  catch<B = never>(onRejected?: ((reason: unknown) => B | PromiseLike<B>) | null): Promise<unknown> {
    return this.then(undefined, onRejected);
  }
}
