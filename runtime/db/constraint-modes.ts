import { JetfnError } from "../support/errors";

/**
 * Deferred constraints in the transactions the runtime commits. Postgres fires a deferred
 * constraint (a constraint trigger, key or unique check declared DEFERRABLE INITIALLY DEFERRED, or
 * deferred by a handler's SET CONSTRAINTS) when its transaction commits: after the check that every
 * audit row carries the stamp of the job that wrote it (invocation-checks.ts), and, in a transaction
 * shared by several jobs, under the last job's stamp. So each job's deferred constraints fire at the
 * end of its own part instead, as they would at its own COMMIT: under its stamp, before its audit
 * rows are checked and before the next job's part begins; a violation is that job's failure.
 *
 * SET CONSTRAINTS lasts to the end of the transaction (a released savepoint keeps it) and Postgres
 * has no statement that puts the declared modes back. So a later job of a shared transaction starts
 * with the statements jetfn.constraint_modes() returns, read once as the transaction begins
 * (schema/migrations/0027_jetfn_constraint_modes.sql); with no constraint declared INITIALLY
 * DEFERRED, the usual case, there are none.
 */

/**
 * Fires the deferred constraints the job's statements queued, at the end of its part (before its
 * final record and its checks). A utility statement: nothing to plan, and with nothing queued it
 * does nothing else.
 */
export const DEFERRED_CHECKS_SQL = "set constraints all immediate";

/** Read last in the message that begins a shared transaction: what a later part starts with. */
export const CONSTRAINT_MODES_SQL = "select jetfn.constraint_modes() as modes";

/** The statements in the reply to a message that ends with CONSTRAINT_MODES_SQL (one result per statement). */
export function constraintModes(reply: unknown): string {
  const results = reply as { modes?: unknown }[][];
  const modes = results.at(-1)?.[0]?.modes;
  if (typeof modes !== "string")
    throw new JetfnError("E_INTERNAL", "the constraint modes were missing from their reply");
  return modes;
}
