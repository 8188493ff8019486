import type { Sql } from "postgres";
import type { InvocationDatabase } from "../sdk/define-function";
import { JetfnError } from "../support/errors";
import { bindPlainDatabase, type DatabaseBinder } from "./app-database";
import { isConnectionError } from "./client";
import type { CommitGroups } from "./commit-groups";
import { DEFERRED_CHECKS_SQL } from "./constraint-modes";
import { asRefusal, invocationCheck } from "./invocation-checks";
import type { Seat } from "./lane";
import { LazyQuery, type QueryMode } from "./lazy-query";
import { shouldPrepare } from "./prepared-statements";
import { endTransaction } from "./session-reset";
import { isSharedCommitFailure } from "./shared-commit-error";
import { assertStatementAllowed } from "./statement-guard";
import {
  abandon,
  COMMIT_DEADLINE_MS,
  type FinalStatement,
  rollbackAndRelease,
  sendable,
  stampStatements,
  type TransactionStamp,
  withinDeadline,
} from "./transaction-parts";
import { WatchedConnection } from "./watched-connection";

export type { FinalStatement, TransactionStamp } from "./transaction-parts";

/**
 * One invocation's transaction. Nothing touches Postgres until the handler's first query; that
 * query is pipelined behind BEGIN and the stamp, and the final statement is pipelined with COMMIT,
 * so a job writing one row costs two round trips instead of four.
 */
export interface InvocationTransaction {
  readonly db: InvocationDatabase;
  /** True once the handler made a query (and so a transaction exists). */
  readonly begun: boolean;
  /**
   * Set when one of the invocation's statements (or taking its connection or lane) failed because
   * the database went away, or because the shared transaction it was in was doomed by another job.
   * What the runtime saw itself: the handler may have caught, wrapped or replaced that error, and
   * an error it throws of its own (a refused HTTP connection, say) is not the database's.
   */
  readonly lost: TransactionLoss | undefined;
  /** A statement the guard refused: the attempt fails, whatever the handler did with the error. */
  readonly refused: JetfnError | undefined;
  /**
   * Runs `final` and COMMIT together; throws if either fails (the transaction is then rolled back).
   * In a shared transaction, `handlerDone` is called once the invocation's part is done and only the
   * group's COMMIT is pending.
   */
  commit(final?: FinalStatement, handlerDone?: () => void): Promise<void>;
  /**
   * Rolls back; further queries through `db` fail. Rejects only with a SharedCommitError: the
   * failure that made it roll back may stem from a group's writes that then did not commit.
   */
  rollback(): Promise<void>;
}

/**
 * Commits `transaction` with `statement` as its last statement. Without a transaction begun (a
 * handler, or a step, that touched no table), `statement` runs alone, atomic by itself.
 */
export async function commitWith(
  sql: Sql,
  transaction: InvocationTransaction | undefined,
  statement: FinalStatement | undefined,
  handlerDone?: () => void,
): Promise<void> {
  if (transaction?.begun) return transaction.commit(statement, handlerDone);
  await transaction?.commit();
  if (statement) {
    await sql.unsafe(statement.text, statement.params as never[], { prepare: shouldPrepare(sql, statement.text) });
  }
}

/** Why an invocation's transaction was lost through no fault of its handler. */
export type TransactionLoss = "database" | "shared-commit";

/** Creates a lazy transaction on `sql`'s pool for one invocation. */
export function createInvocationTransaction(
  sql: Sql,
  stamp: TransactionStamp,
  /** When given, the invocation's writes run in a savepoint of a shared transaction (group commit). */
  groups?: CommitGroups,
  /** Makes `db` (with the app's schema, when it has one). @default bindPlainDatabase */
  bindDatabase: DatabaseBinder = bindPlainDatabase,
): InvocationTransaction {
  return new LazyTransaction(sql, stamp, groups, bindDatabase);
}

class LazyTransaction implements InvocationTransaction {
  readonly #client: unknown;
  #db: InvocationDatabase | undefined;
  readonly #sql: Sql;
  readonly #stamp: TransactionStamp;
  readonly #groups: CommitGroups | undefined;
  readonly #bindDatabase: DatabaseBinder;
  /** The connection of its own transaction, or its seat on a commit lane (group commit). */
  #connection: Promise<WatchedConnection | Seat> | undefined;
  #setup: Promise<unknown> = Promise.resolve();
  #closed = false;
  #lost: TransactionLoss | undefined;
  #savepoints = 0;
  /** A statement of the handler's the guard refused: the attempt fails, whatever the handler did with the error. */
  #refused: JetfnError | undefined;
  /** When a transaction of its own began, though commit groups were offered (they hear how long it lasted). */
  #ownSince: number | undefined;

  constructor(sql: Sql, stamp: TransactionStamp, groups: CommitGroups | undefined, bindDatabase: DatabaseBinder) {
    this.#sql = sql;
    this.#bindDatabase = bindDatabase;
    this.#stamp = stamp;
    this.#groups = groups;
    // drizzle drives this object exactly as it drives a postgres.js client.
    const client = {
      options: sql.options,
      unsafe: (text: string, params?: unknown[], options?: { prepare?: boolean }) =>
        this.#guardedQuery(text, params, options),
      begin: (first: unknown, second?: unknown) =>
        this.#savepoint((typeof first === "function" ? first : second) as SavepointCallback),
      savepoint: (callback: SavepointCallback) => this.#savepoint(callback),
    };
    this.#client = client;
  }

  /** Built on first use: a handler that never touches the database never pays for drizzle. */
  get db(): InvocationDatabase {
    this.#db ??= this.#bindDatabase(this.#client as Sql);
    return this.#db;
  }

  get begun(): boolean {
    return this.#connection !== undefined;
  }

  get refused(): JetfnError | undefined {
    return this.#refused;
  }

  get lost(): TransactionLoss | undefined {
    return this.#lost;
  }

  async commit(final?: FinalStatement, handlerDone?: () => void): Promise<void> {
    this.#closed = true;
    if (this.#refused) throw this.#refused;
    if (!this.#connection) return;
    const connection = await this.#connection;
    if (!(connection instanceof WatchedConnection)) {
      this.#connection = undefined;
      return connection.commit(final, handlerDone);
    }
    this.#reportHold();
    // COMMIT ends the transaction whatever happens (Postgres rolls back a failed one itself), and
    // the connection goes back to the pool: a later rollback() must not touch it.
    this.#connection = undefined;
    let answered = false;
    let clean = false;
    try {
      const finalQuery = this.#checkAndFinal(connection, final ? sendable(final) : undefined);
      const { ended: commitQuery, reset } = endTransaction(connection, "commit");
      const [setup, finalResult, commitResult, resetResult] = await withinDeadline(
        Promise.allSettled([this.#setup, finalQuery, commitQuery, reset]),
        COMMIT_DEADLINE_MS,
        "COMMIT",
      );
      answered = true;
      clean = resetResult.status === "fulfilled";
      if (setup.status === "rejected") throw setup.reason;
      if (finalResult.status === "rejected") throw caughtFailure(finalResult.reason) ?? asRefusal(finalResult.reason);
      if (commitResult.status === "rejected") throw commitResult.reason;
      if ((commitResult.value as { command?: string }).command === "ROLLBACK") throw caughtFailure();
    } finally {
      // One that never answered goes back to the pool only if it ever does (see abandon()).
      if (answered && clean) connection.release();
      else if (answered) connection.discard();
      else void abandon(connection);
    }
  }

  /**
   * Sends the checks (invocation-checks.ts) and the final statement. An inlined final record shares
   * one message with the checks: even in a transaction of a handler's own making (one that slipped
   * past the guard), a failed check then stops the record from being written.
   */
  #checkAndFinal(
    connection: WatchedConnection,
    statement: { text: string; params: unknown[] } | undefined,
  ): Promise<unknown> {
    // The handler's deferred constraints first, under its stamp and role, so the check sees what
    // they write (see constraint-modes.ts). Then the checks as the runtime's role: a handler's SET
    // LOCAL ROLE lasts until COMMIT, and the checks read the audit log.
    const check = `${DEFERRED_CHECKS_SQL}; reset role; ${invocationCheck(this.#stamp)}`;
    if (statement?.params.length === 0) return connection.unsafe(`${check}; ${statement.text}`).execute();
    const sent = [connection.unsafe(check).execute()];
    if (statement) {
      const prepare = shouldPrepare(this.#sql, statement.text);
      sent.push(connection.unsafe(statement.text, statement.params as never[], { prepare }).execute());
    }
    return Promise.allSettled(sent).then((results) => {
      const failed = results.find((result) => result.status === "rejected");
      if (failed) throw failed.reason;
    });
  }

  async rollback(): Promise<void> {
    this.#closed = true;
    if (!this.#connection) return;
    const connection = await this.#connection.catch(() => undefined);
    if (!connection) return;
    if (!(connection instanceof WatchedConnection)) return connection.rollback();
    this.#reportHold();
    await rollbackAndRelease(connection);
  }

  /** Tells the commit groups how long a transaction of its own was held, as a lane's seat does. */
  #reportHold(): void {
    if (this.#ownSince === undefined) return;
    this.#groups?.held(this.#stamp.functionName, performance.now() - this.#ownSince);
    this.#ownSince = undefined;
  }

  /** A statement of the handler's: refused (never sent) when it would reach beyond the invocation. */
  #guardedQuery(text: string, params: unknown[] = [], options?: { prepare?: boolean }): LazyQuery {
    let seals: boolean;
    try {
      seals = assertStatementAllowed(text);
    } catch (error) {
      this.#refused ??= error as JetfnError;
      return new LazyQuery(() => Promise.reject(error));
    }
    return this.#query(text, params, options, seals);
  }

  #query(text: string, params: unknown[] = [], options?: { prepare?: boolean }, seals = false): LazyQuery {
    return new LazyQuery((mode) => this.#run(text, params, options, mode, seals));
  }

  async #run(
    text: string,
    params: unknown[],
    options: { prepare?: boolean } | undefined,
    mode: QueryMode,
    seals: boolean,
  ): Promise<unknown> {
    try {
      const connection = await this.#open();
      // A statement with parameters runs prepared: described once per connection, then one round trip.
      const prepare = options?.prepare === true || (params.length > 0 && shouldPrepare(this.#sql, text));
      if (!(connection instanceof WatchedConnection)) {
        if (seals) connection.seal();
        return await connection.query(text, params, { ...options, prepare }, mode);
      }
      const query = connection.unsafe(text, params as never[], { ...options, prepare });
      return mode === "values" ? await query.values() : await query;
    } catch (error) {
      // Noted before the handler sees the error: whatever it then throws, this is what happened.
      if (isConnectionError(error)) this.#lost ??= "database";
      else if (isSharedCommitFailure(error)) this.#lost ??= "shared-commit";
      throw error;
    }
  }

  #open(): Promise<WatchedConnection | Seat> {
    if (this.#closed) {
      return Promise.reject(
        new JetfnError("E_HANDLER_TIMEOUT", "the invocation already ended; its transaction no longer accepts queries"),
      );
    }
    this.#connection ??= this.#begin();
    return this.#connection;
  }

  async #begin(): Promise<WatchedConnection | Seat> {
    if (this.#groups?.takes(this.#stamp.functionName)) return this.#groups.seat(this.#stamp);
    // Written before a connection is taken: a stamp that cannot be written as SQL takes none.
    const opening = `begin; ${stampStatements(this.#stamp)}`;
    const connection = await WatchedConnection.reserve(this.#sql);
    // Timed from here: waiting for a connection is not holding one.
    if (this.#groups) this.#ownSince = performance.now();
    // Sent now, without waiting: it travels in the same write as the handler's first query.
    this.#setup = connection.unsafe(opening).execute();
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

/**
 * The error of an attempt whose transaction a failed statement had already doomed (the handler
 * caught its error), seen at COMMIT or by the statements just before it; undefined for `cause`s of
 * another kind.
 */
function caughtFailure(cause?: unknown): JetfnError | undefined {
  if (cause !== undefined && (cause as { code?: unknown }).code !== "25P02") return undefined;
  return new JetfnError(
    "E_HANDLER_FAILED",
    "a statement failed inside the invocation's transaction (its error was caught by the handler), so Postgres rolled the transaction back",
    { cause },
  );
}
