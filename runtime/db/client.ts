import { drizzle, type PostgresJsDatabase } from "drizzle-orm/postgres-js";
import postgres, { type Sql } from "postgres";
import { JetfnError } from "../support/errors";

/** Options of a database connection pool. */
export interface DatabaseOptions {
  url: string;
  /** Connections in the pool. @default 20 */
  poolSize?: number;
  /** Shown in pg_stat_activity. @default "jetfn" */
  applicationName?: string;
}

/** A pool of Postgres connections with drizzle on top. */
export interface DatabaseClient {
  readonly sql: Sql;
  readonly db: PostgresJsDatabase<Record<string, never>>;
  close(): Promise<void>;
}

/** Opens a pool (connections are made on demand). */
export function connectDatabase(options: DatabaseOptions): DatabaseClient {
  const sql = postgres(options.url, {
    max: options.poolSize ?? 20,
    onnotice: () => {},
    connection: { application_name: options.applicationName ?? "jetfn" },
    // Bounded, so an unreachable database is reported instead of waited for forever.
    connect_timeout: 10,
    backoff: reconnectDelaySeconds,
  });
  // drizzle installs its type parsers on the pool's options; every connection shares them.
  const db = drizzle(sql);
  return {
    sql,
    db,
    close: () => sql.end({ timeout: 5 }),
  };
}

/**
 * How long a pooled connection waits before connecting again after `failures` failed connections
 * (postgres.js counts them across the pool). The driver's default grows to 10-20 s after six, which a
 * Postgres restart reaches in a second or two of refused connections: the runtime then stayed away
 * long after the server was back, and status requests went unanswered. At most a second instead;
 * with jitter, so the pool's connections do not all knock at once.
 */
export function reconnectDelaySeconds(failures: number): number {
  return Math.min(0.05 * 2 ** failures, 1) * (0.5 + Math.random() / 2);
}

/** Checks the database answers; throws E_DATABASE_UNAVAILABLE naming the host otherwise. */
export async function assertDatabaseReachable(client: DatabaseClient): Promise<void> {
  try {
    await client.sql`select 1`;
  } catch (error) {
    const { host, port, database } = client.sql.options as unknown as {
      host: string[];
      port: number[];
      database: string;
    };
    throw new JetfnError(
      "E_DATABASE_UNAVAILABLE",
      `cannot reach Postgres at ${host.join(",")}:${port.join(",")}/${database}: ${(error as Error).message}`,
      { cause: error },
    );
  }
}

const CONNECTION_ERROR_CODES = new Set([
  "CONNECTION_CLOSED",
  "CONNECTION_ENDED",
  "CONNECTION_DESTROYED",
  "CONNECT_TIMEOUT",
  "ECONNREFUSED",
  "ECONNRESET",
  "EPIPE",
  "ETIMEDOUT",
  "57P01", // admin_shutdown (server restart, pg_terminate_backend)
  "57P02", // crash_shutdown
  "57P03", // cannot_connect_now (starting up)
  "08000",
  "08003",
  "08006",
  "08001",
  "08004",
]);

/** True for errors meaning the database went away, not that the query was wrong. */
export function isConnectionError(error: unknown): boolean {
  const code = (error as { code?: unknown } | undefined)?.code;
  return typeof code === "string" && CONNECTION_ERROR_CODES.has(code);
}

/** True when `error` or one of its causes is a connection error (drizzle wraps the driver's error in its cause). */
export function hasConnectionErrorCause(error: unknown): boolean {
  let current = error;
  for (let depth = 0; current !== null && typeof current === "object" && depth < 5; depth++) {
    if (isConnectionError(current)) return true;
    current = (current as { cause?: unknown }).cause;
  }
  return false;
}
