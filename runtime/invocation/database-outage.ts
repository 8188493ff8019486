import type { Logger } from "pino";
import { isConnectionError } from "../db/client";

/** Counts jobs waiting for an unreachable database to answer. */
export interface DatabaseOutage {
  waiting: number;
}

/** What waiting for the database needs from the runtime. */
export interface OutageDependencies {
  shutdownSignal: AbortSignal;
  /** Jobs of this runtime waiting for the database right now (held jobs keep their leases meanwhile). */
  outage: DatabaseOutage;
}

const STUCK_GRACE_MS = 60_000;
/** Wait before retrying a job whose attempt could not reach the database (not the handler's fault). */
const DATABASE_RETRY_MS = 2_000;

/**
 * Whether a job held for `heldForMs` still deserves in-progress pings: while it could legitimately
 * be waiting for a slot and running (twice its timeout, plus a minute for commit and records), or
 * while the database is away. An attempt stuck past that loses its lease and runs again elsewhere.
 */
export function keepJobAlive(timeoutMs: number, outage: DatabaseOutage, heldForMs: number): boolean {
  return heldForMs < 2 * timeoutMs + STUCK_GRACE_MS || outage.waiting > 0;
}

/**
 * Runs a database step, and while it fails because the database is unreachable, waits and runs it
 * again. The job's message stays held (and kept alive) meanwhile. Other errors propagate.
 */
export async function whenDatabaseAnswers<T>(
  deps: OutageDependencies,
  log: Logger,
  step: () => Promise<T>,
): Promise<T> {
  let warned = false;
  for (;;) {
    try {
      return await step();
    } catch (error) {
      if (!isConnectionError(error) || deps.shutdownSignal.aborted) throw error;
      if (!warned) log.warn({ err: error }, "The database is unreachable; holding the job until it answers.");
      warned = true;
      deps.outage.waiting++;
      try {
        await new Promise((resolve) => setTimeout(resolve, DATABASE_RETRY_MS));
      } finally {
        deps.outage.waiting--;
      }
    }
  }
}
