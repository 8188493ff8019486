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
 * with the statements jetfn.constraint_modes() returns (schema/migrations/0027_jetfn_constraint_modes.sql);
 * with no constraint declared INITIALLY DEFERRED, the usual case, there are none.
 */

/**
 * Fires the deferred constraints the job's statements queued, at the end of its part (before its
 * final record and its checks). A utility statement: nothing to plan, and with nothing queued it
 * does nothing else.
 */
export const DEFERRED_CHECKS_SQL = "set constraints all immediate";

/** Read last in a message that begins a shared transaction, when {@link DeclaredModes.due}. */
export const CONSTRAINT_MODES_SQL = "select jetfn.constraint_modes() as modes";

/**
 * How long the statements read are used before they are read again. The read scans the catalog
 * (pg_constraint): 130-180 µs of Postgres CPU on a loaded machine, a few per cent of an insert job's
 * if paid with every shared transaction. For as long after a migration changes which constraints are deferrable, a later job
 * of a shared transaction may start from the modes declared before it (the audit check does not
 * depend on them).
 */
const MAX_AGE_MS = 1_000;

/** The statements that give a later part of a shared transaction the declared constraint modes. */
export class DeclaredModes {
  #statements: string | undefined;
  #readAt = Number.NEGATIVE_INFINITY;
  #reading = false;

  /** The statements, or undefined until first read: until then no later part may open. */
  get statements(): string | undefined {
    return this.#statements;
  }

  /** Whether the message that begins a transaction should read them again (ending with CONSTRAINT_MODES_SQL). */
  get due(): boolean {
    return !this.#reading && performance.now() - this.#readAt >= MAX_AGE_MS;
  }

  /** Takes them from the reply to such a message; if it failed (dooming its transaction), a later one reads them. */
  read(reply: Promise<unknown>): void {
    this.#reading = true;
    void reply
      .then((results) => {
        this.#statements = constraintModes(results);
        this.#readAt = performance.now();
      })
      .catch(() => undefined)
      .finally(() => {
        this.#reading = false;
      });
  }
}

/** The statements in the reply to a message that ends with CONSTRAINT_MODES_SQL (one result per statement). */
function constraintModes(reply: unknown): string {
  const results = reply as { modes?: unknown }[][];
  const modes = results.at(-1)?.[0]?.modes;
  if (typeof modes !== "string") {
    throw new JetfnError("E_INTERNAL", "the constraint modes were missing from their reply");
  }
  return modes;
}
