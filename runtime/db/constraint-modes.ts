import { setTimeout as sleep } from "node:timers/promises";
import type { Logger } from "pino";
import type { Sql } from "postgres";
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
 * with the statements jetfn.constraint_modes() returns (schema/migrations/0027_jetfn_constraint_modes.sql,
 * 0030_jetfn_constraint_mode_clashes.sql); with no constraint declared INITIALLY DEFERRED, the usual
 * case, there are none. Until they are read (and while reading them fails) a lane's transactions
 * hold one job each, which need none.
 *
 * The statements name the constraints declared INITIALLY IMMEDIATE, and SET CONSTRAINTS s.name sets
 * every constraint of that name in schema s: names are unique per table only. When one declared
 * INITIALLY DEFERRED shares a name with one declared INITIALLY IMMEDIATE, no statement gives both
 * their declared modes, and constraint_modes() returns null: a lane's transactions then hold one job
 * each too, for as long as the clash lasts, so a handler that relies on the deferral behaves as it
 * does alone (one warning names the clash; renaming either constraint lets transactions be shared).
 */

/**
 * Fires the deferred constraints the job's statements queued, at the end of its part (before its
 * final record and its checks). A utility statement: nothing to plan, and with nothing queued it
 * does nothing else.
 */
export const DEFERRED_CHECKS_SQL = "set constraints all immediate";

/** A read that takes longer (the function replaced by one that hangs, a lock) fails. */
const READ_TIMEOUT_MS = 5_000;

/**
 * Read on the pool, beside the jobs' transactions: a read that fails (EXECUTE revoked, the function
 * replaced by one that raises, a timeout) must not doom a job's transaction. One simple-protocol
 * message, one implicit transaction: the timeout ends with it. The clashing names, for the warning,
 * only when the modes are null (a second look at the catalog, only then).
 */
const CONSTRAINT_MODES_SQL = `set local statement_timeout = ${READ_TIMEOUT_MS};
select modes, case when modes is null then jetfn.constraint_mode_clashes() end as clashes
from jetfn.constraint_modes() as modes`;

/**
 * How long after their read began the statements may open a later part of a shared transaction.
 * For as long after a migration changes which constraints are deferrable, a later job of a shared
 * transaction may start from the modes declared before it (the audit check does not depend on them).
 */
const MAX_AGE_MS = 1_000;

/**
 * When they are read again, counted from when the last read began: before they expire, so a busy
 * runtime always has some (a lane without them holds one job per transaction). The read scans the
 * catalog (pg_constraint): 130-180 µs of Postgres CPU on a loaded machine, at most 1.25 times a
 * second, and only while lanes open parts: an idle runtime reads nothing (no timer).
 */
const REFRESH_AFTER_MS = 800;

/**
 * How long, from its start, a lane with a job waiting may hold its transaction open for a read
 * under way rather than commit it (the members wait that much longer for their COMMIT). A read
 * answers in well under a millisecond on a warm pool, but it may need a new connection, and on a
 * loaded machine (two cores, load 7) it took over 100 ms: a burst after a quiet second then lost
 * its grouping (75 transactions for 80 jobs). It matters only when lanes get busy after a second or
 * more of quiet: a busy runtime reads again before the modes expire.
 */
const WAIT_FOR_READ_MS = 1_000;

/** After a failed read the next waits this long, doubled per failure in a row, up to MAX_RETRY_MS. */
const FIRST_RETRY_MS = 1_000;
const MAX_RETRY_MS = 30_000;

/** The statements that give a later part of a shared transaction the declared constraint modes. */
export class DeclaredModes {
  readonly #sql: Sql;
  readonly #logger: Logger;
  #statements: string | null | undefined;
  /** Whether the last read found constraints of one name with different modes (told once per streak). */
  #clashing = false;
  /** When the read the statements came from began (the catalog it saw is at least that recent). */
  #readAt = Number.NEGATIVE_INFINITY;
  #nextReadAt = Number.NEGATIVE_INFINITY;
  #reading: Promise<void> | undefined;
  #readingSince = Number.NEGATIVE_INFINITY;
  #failures = 0;
  #failingSince = 0;
  #closed = false;

  constructor(sql: Sql, logger: Logger) {
    this.#sql = sql;
    this.#logger = logger;
  }

  /**
   * The statements ('' when none are needed); null when no statement can give a later part the
   * declared modes (constraints of one name with different modes): then no later part may open, and
   * the lane commits before its next job. Undefined while none were read in the last MAX_AGE_MS: no
   * later part may open before a read either, which the lane may wait for (see arriving()).
   */
  get statements(): string | null | undefined {
    return performance.now() - this.#readAt < MAX_AGE_MS ? this.#statements : undefined;
  }

  /** Reads them on the pool if due, without waiting; called as a lane opens a part, or needs them. */
  refresh(): void {
    if (this.#reading || this.#closed || performance.now() < this.#nextReadAt) return;
    this.#readingSince = performance.now();
    this.#reading = this.#read(this.#readingSince).finally(() => {
      this.#reading = undefined;
    });
  }

  /**
   * A read under way that began less than WAIT_FOR_READ_MS ago: settles when it does, or when that
   * time is up. Undefined when there is none worth waiting for.
   */
  arriving(): Promise<void> | undefined {
    const left = this.#readingSince + WAIT_FOR_READ_MS - performance.now();
    if (!this.#reading || left <= 0) return undefined;
    return Promise.race([this.#reading, sleep(left, undefined, { ref: false })]);
  }

  /** Reads no more, once a read under way ends. */
  async close(): Promise<void> {
    this.#closed = true;
    await this.#reading;
  }

  async #read(startedAt: number): Promise<void> {
    try {
      const { modes, clashes } = constraintModes(await this.#sql.unsafe(CONSTRAINT_MODES_SQL));
      this.#statements = modes;
      this.#readAt = startedAt;
      this.#nextReadAt = startedAt + REFRESH_AFTER_MS;
      this.#recovered(modes !== null);
      this.#noteClashes(modes === null, clashes);
    } catch (error) {
      this.#failed(error);
    }
  }

  #failed(error: unknown): void {
    const retryInMs = Math.min(FIRST_RETRY_MS * 2 ** this.#failures, MAX_RETRY_MS);
    this.#nextReadAt = performance.now() + retryInMs;
    this.#failures += 1;
    // One warning per streak of failures, not one per read.
    if (this.#failures > 1) return;
    this.#failingSince = performance.now();
    this.#logger.warn(
      { err: error, retryInMs },
      "Could not read the declared constraint modes; until a read succeeds, shared transactions hold one job each.",
    );
  }

  /** Tells an operator why transactions stopped being shared, once per streak of clashing reads, and when they are again. */
  #noteClashes(clashing: boolean, clashes: string[]): void {
    if (clashing === this.#clashing) return;
    this.#clashing = clashing;
    if (clashing) {
      this.#logger.warn(
        { clashingConstraints: clashes },
        "Deferrable constraints of one schema share a name with different declared modes, and no SET CONSTRAINTS statement can give each its own; until one is renamed, shared transactions hold one job each.",
      );
    } else {
      this.#logger.info(
        "No deferrable constraints of one schema share a name with different modes any more; transactions are shared again.",
      );
    }
  }

  /** `shared`: whether what was read lets transactions be shared (not while constraint names clash). */
  #recovered(shared: boolean): void {
    if (this.#failures === 0) return;
    const failingForMs = Math.round(performance.now() - this.#failingSince);
    this.#logger.info(
      { failedReads: this.#failures, failingForMs },
      shared
        ? "Read the declared constraint modes again; transactions are shared again."
        : "Read the declared constraint modes again.",
    );
    this.#failures = 0;
  }
}

/** The statements (or null) and the clashing names in the reply to CONSTRAINT_MODES_SQL (one result per statement). */
function constraintModes(reply: unknown): { modes: string | null; clashes: string[] } {
  const results = reply as { modes?: unknown; clashes?: unknown }[][];
  const row = results.at(-1)?.[0];
  const modes = row?.modes;
  if (typeof modes !== "string" && modes !== null) {
    throw new JetfnError("E_INTERNAL", "the constraint modes were missing from their reply");
  }
  const clashes = Array.isArray(row?.clashes) ? row.clashes.map(String) : [];
  return { modes, clashes };
}
