import { JetfnError } from "../support/errors";
import { isConnectionError } from "./client";
import { endTransaction } from "./session-reset";
import { inlineParameters, sqlLiteral } from "./sql-literal";
import type { WatchedConnection } from "./watched-connection";

/** Who is writing: read by the audit triggers through transaction-local settings. */
export interface TransactionStamp {
  functionName: string;
  invocationId: string;
  attempt: number;
  /** The key of the durable step whose transaction this is (jetfn.step); absent outside steps. */
  step?: string;
  /** Postgres cancels any statement running longer (the invocation's remaining time). */
  statementTimeoutMs: number;
}

/** A statement run just before COMMIT, in the same round trip (the job's final record). */
export interface FinalStatement {
  text: string;
  params: unknown[];
  /**
   * The text is jetfn's own (no `$` but its placeholders), so it may be sent with its parameters
   * written as literals: one simple-protocol message that pipelines behind what is in flight.
   */
  inlinable?: boolean;
  /**
   * In a shared transaction (group commit), the members' rows may be written together instead: one
   * call of `text`, whose $1 is the JSON array of every member's `row`, sent just before the COMMIT.
   * Its failure rolls the group back, as the statements' would.
   */
  grouped?: { text: string; row: string };
}

/**
 * The stamp as SET LOCAL statements, to lead a simple-protocol message. SET is a utility command:
 * Postgres neither plans nor executes it, which costs less than even a prepared
 * `select set_config(...)`, and it needs no message (nor reply) of its own.
 */
export function stampStatements(stamp: TransactionStamp): string {
  return (
    `set local jetfn.function = ${sqlLiteral(stamp.functionName)}; ` +
    `set local jetfn.invocation_id = ${sqlLiteral(stamp.invocationId)}; ` +
    `set local jetfn.attempt = ${sqlLiteral(String(stamp.attempt))}; ` +
    (stamp.step === undefined ? "" : `set local jetfn.step = ${sqlLiteral(stamp.step)}; `) +
    `set local statement_timeout = ${Math.max(1, Math.round(stamp.statementTimeoutMs))}`
  );
}

/**
 * Longest a COMMIT (or ROLLBACK) may take before its connection is given up. The patched driver
 * rejects at once when the server ends a session, but a server or network that stops answering
 * without closing the connection would leave it waiting; without a bound the job would hang, kept
 * alive by its in-progress pings. After it, the attempt counts as a database loss and runs again
 * on a fresh connection; the fence settles a COMMIT that did land.
 */
export const COMMIT_DEADLINE_MS = 15_000;
export const ROLLBACK_DEADLINE_MS = 5_000;

/**
 * Rolls back what `connection` has open and gives it back to the pool once the ROLLBACK answers.
 * Waits for that at most ROLLBACK_DEADLINE_MS (see {@link abandon} for a connection slower than that).
 */
export async function rollbackAndRelease(connection: WatchedConnection): Promise<void> {
  await withinDeadline(abandon(connection), ROLLBACK_DEADLINE_MS, "ROLLBACK").catch(() => undefined);
}

/**
 * Gives up on a connection without waiting for it: a ROLLBACK is queued behind whatever it is still
 * running. A session that was only slow (a statement waiting for a row lock) thus ends its
 * transaction and frees its locks as soon as that statement ends, and the connection goes back to
 * the pool then; left alone, it would sit idle in its transaction holding them, and its pool slot
 * would be lost. A dead connection is closed by the driver, which gives it back to the pool itself.
 */
export function abandon(connection: WatchedConnection): Promise<void> {
  if (connection.closed) return Promise.resolve();
  // The reset goes behind it: the session goes back to the pool as the pool made it.
  const { ended: rollback, reset } = endTransaction(connection, "rollback");
  return Promise.allSettled([rollback, reset]).then(([rolledBack, wasReset]) => {
    if (rolledBack.status === "rejected") return;
    if (wasReset.status === "fulfilled") connection.release();
    else connection.discard();
  });
}

/** True for the deadline's own error: the connection never answered and must not be reused. */
export function isUnanswered(error: unknown): boolean {
  return (error as JetfnError | undefined)?.code === "E_DATABASE_UNAVAILABLE";
}

/** True when the database went away (a connection error) or stopped answering (the deadline's error). */
export function isDatabaseLoss(error: unknown): boolean {
  return isConnectionError(error) || isUnanswered(error);
}

export async function withinDeadline<T>(work: Promise<T>, ms: number, what: string): Promise<T> {
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

/**
 * The text and parameters to send for `final`: written with literals when it is inlinable, so it
 * pipelines (the driver holds back everything behind a statement with parameters it has not
 * prepared, while it asks the server for their types).
 */
export function sendable(final: FinalStatement): { text: string; params: unknown[] } {
  return final.inlinable ? { text: inlineParameters(final.text, final.params), params: [] } : final;
}
