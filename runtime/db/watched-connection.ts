import type { PendingQuery, ReservedSql, Row, Sql } from "postgres";

/**
 * A reserved connection that knows when the driver has closed it.
 *
 * postgres.js 3.4 keeps handing a reserved handle's queries to its connection after the server
 * dropped it (pg_terminate_backend, a restart): the query is written to a socket that is gone,
 * which throws from a timer and kills the process (porsager/postgres#1208), or, once the pool has
 * reconnected that connection for someone else, runs in another session. Releasing such a handle
 * puts a closed connection back among the open ones. So every query goes through `unsafe()`,
 * which refuses once the connection has closed, and `release()` leaves a closed one to the pool.
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

  /** True once the driver reported the connection closed. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Sends a statement (pipelined behind earlier ones); it fails at once if the connection is gone. */
  unsafe(text: string, params: unknown[] = [], options?: { prepare?: boolean }): PendingQuery<Row[]> {
    if (this.#closed) return refused();
    // The first statement brings the driver's connection object, to be told when it closes (the
    // same hook postgres.js's own sql.begin() uses).
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

  /** Gives the connection back to the pool (a closed one is already the pool's to reconnect). */
  release(): void {
    if (this.#driverConnection && this.#driverConnection.onclose === this.#onClose) {
      this.#driverConnection.onclose = null;
    }
    if (!this.#closed) this.#sql.release();
    this.#closed = true;
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
}

/** The error a query on a closed connection gets, coded like the driver's own. */
export function connectionClosedError(): Error {
  return Object.assign(new Error("the Postgres connection was closed (the server ended the session)"), {
    code: "CONNECTION_CLOSED",
  });
}

/** A query that was never sent: it rejects when awaited or executed, like a failed driver query. */
function refused(): PendingQuery<Row[]> {
  const failed = Promise.reject(connectionClosedError());
  failed.catch(() => undefined);
  const query = Object.assign(failed, {
    execute: () => query,
    values: () => query,
    raw: () => query,
    cancel: () => undefined,
  });
  return query as unknown as PendingQuery<Row[]>;
}
