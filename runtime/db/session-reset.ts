import type { WatchedConnection } from "./watched-connection";

/**
 * Puts a session back as the pool made it, after a handler's transaction ended on it: every
 * setting (search_path, default_transaction_read_only, app.* ...) back to its role's and
 * database's default, its role and session authorization its own, no session advisory lock, no
 * LISTEN, no open cursor (WITH HOLD) and no temporary table. The statement guard refuses the
 * statements that change a session, but a function already in the database (or a DO block run
 * some other way) can still call set_config(..., false) or pg_advisory_lock(): whatever it left
 * would reach the next invocation, or the runtime's own statements, on the same connection.
 *
 * One simple-protocol message sent right behind the COMMIT (or ROLLBACK), without waiting: it
 * costs no round trip, and the connection goes back to the pool only once it has run.
 * Prepared statements are kept: the driver's own live there (a handler cannot PREPARE, see the guard).
 */
const SESSION_RESET =
  "reset all; reset role; reset session authorization; select pg_catalog.pg_advisory_unlock_all(); unlisten *; close all; discard temp";

/**
 * Ends the transaction open on `connection` with COMMIT or ROLLBACK and sends the reset right behind
 * it, without waiting for either. `ended` settles with the COMMIT's or ROLLBACK's answer; `reset`
 * resolves once the reset ran, and rejects if it failed (the session must then serve no one else).
 */
export function endTransaction(
  connection: WatchedConnection,
  end: "commit" | "rollback",
): { ended: Promise<unknown>; reset: Promise<unknown> } {
  const ended = connection.unsafe(end).execute();
  return { ended, reset: connection.unsafe(SESSION_RESET).execute() };
}
