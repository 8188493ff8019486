import type { PendingQuery, ReservedSql, Row, Sql } from "postgres";

/**
 * A reserved connection that knows when the driver has closed it.
 *
 * The driver itself no longer lets a reserved handle outlive its session: postgres.js is patched
 * on install (`patches/postgres+3.4.9.patch`, see RELIABILITY.md), so once the server ended the
 * session (pg_terminate_backend, a restart) the handle's statements are rejected with
 * CONNECTION_CLOSED, never sent to the session the pool reconnects, and its `release()` leaves the
 * connection to the pool. Before the patch this class refused those statements itself.
 *
 * Two things are still jetfn's to do:
 * - `closed`, learnt from the driver's `onclose` hook (the one postgres.js's own `sql.begin()`
 *   uses): a commit lane whose connection was killed between jobs reserves a new one before the
 *   next job, instead of failing that job's first statement and running it again.
 * - `release()` is safe to call twice: a second call to the driver's would hand the pool a
 *   connection that another user may hold by then, so only the first one reaches it.
 */
export class WatchedConnection {
  readonly #sql: ReservedSql;
  #closed = false;
  #driverConnection: DriverConnection | undefined;

  private constructor(sql: ReservedSql) {
    this.#sql = sql;
  }

  /** Reserves a connection from `pool`. */
  static async reserve(pool: Sql): Promise<WatchedConnection> {
    return new WatchedConnection(await pool.reserve());
  }

  /** True once the driver reported the connection closed, or once it was released. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Sends a statement (pipelined behind earlier ones); the driver rejects it if the session ended. */
  unsafe(text: string, params: readonly unknown[] = [], options?: { prepare?: boolean }): PendingQuery<Row[]> {
    // Until the driver has handed over its connection object, each statement asks for it, to be
    // told when it closes (it is not handed over for a statement that must wait for an answer).
    const hook = this.#driverConnection
      ? options
      : {
          ...options,
          onexecute: (connection: DriverConnection) => {
            this.#watch(connection);
            return true;
          },
        };
    return this.#sql.unsafe(text, params as never[], hook as { prepare?: boolean });
  }

  /** Gives the connection back to the pool; later calls do nothing. */
  release(): void {
    if (this.#driverConnection && this.#driverConnection.onclose === this.#onClose) {
      this.#driverConnection.onclose = null;
    }
    if (!this.#closed) this.#sql.release();
    this.#closed = true;
  }

  /** Ends the session (one whose state could not be reset must serve no one else) and gives the handle back. */
  discard(): void {
    this.#driverConnection?.terminate();
    this.release();
  }

  readonly #onClose = (): void => {
    this.#closed = true;
  };

  #watch(connection: DriverConnection): void {
    this.#driverConnection = connection;
    connection.onclose = this.#onClose;
  }
}

/** What postgres.js's connection object exposes to `onexecute`. */
interface DriverConnection {
  onclose: ((error: unknown) => void) | null;
  terminate(): void;
}
