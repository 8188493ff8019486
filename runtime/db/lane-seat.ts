import { JetfnError } from "../support/errors";
import { isConnectionError } from "./client";
import { DEFERRED_CHECKS_SQL } from "./constraint-modes";
import type { Lane, LaneOwner, Seat, SeatPart } from "./lane";
import type { QueryMode } from "./lazy-query";
import { SharedCommitError } from "./shared-commit-error";
import { COMMIT_DEADLINE_MS, type FinalStatement, sendable, withinDeadline } from "./transaction-parts";
import type { WatchedConnection } from "./watched-connection";

/** The code Postgres answers with inside a transaction an earlier statement already failed. */
const IN_FAILED_TRANSACTION = "25P02";

/**
 * One job's savepoint on a lane. A job that finishes cleanly hands the lane on at once: its final
 * record and release are sent without waiting (see commit-groups.ts). A job that saw one of its
 * statements fail, or a later attempt (whose final record is the fence), waits for them instead,
 * so its failure stays its own.
 */
export class LaneSeat implements Seat {
  readonly #scheduler: LaneOwner;
  readonly #lane: Lane;
  readonly #connection: WatchedConnection;
  readonly #savepoint: string;
  readonly #setup: Promise<unknown>;
  readonly #part: SeatPart;
  readonly #started = performance.now();
  /** One of the job's statements failed (the handler may have recovered with a savepoint of its own). */
  #sawFailure = false;
  #connectionLost: unknown;
  #ended = false;

  constructor(
    scheduler: LaneOwner,
    lane: Lane,
    connection: WatchedConnection,
    savepoint: string,
    setup: Promise<unknown>,
    part: SeatPart,
  ) {
    this.#scheduler = scheduler;
    this.#lane = lane;
    this.#connection = connection;
    this.#savepoint = savepoint;
    this.#part = part;
    this.#setup = setup.catch((error: unknown) => {
      this.#failed(error);
      throw error;
    });
    this.#setup.catch(() => undefined);
  }

  seal(): void {
    this.#lane.seal();
  }

  async query(
    text: string,
    params: unknown[],
    options: { prepare?: boolean } | undefined,
    mode: QueryMode,
  ): Promise<unknown> {
    const query = this.#connection.unsafe(text, params, options);
    try {
      return mode === "values" ? await query.values() : await query;
    } catch (error) {
      this.#failed(error);
      // Refused because an earlier job's statement doomed the shared transaction: not this job's doing.
      if ((error as { code?: unknown }).code === IN_FAILED_TRANSACTION && this.#lane.failure !== undefined) {
        throw new SharedCommitError(this.#lane.members + 1, this.#lane.failure);
      }
      throw error;
    }
  }

  async commit(final?: FinalStatement, handlerDone?: () => void): Promise<void> {
    if (this.#ended) throw new JetfnError("E_INTERNAL", "the job's savepoint was already ended");
    this.#ended = true;
    if (this.#connectionLost !== undefined) return this.#lost(this.#connectionLost);
    if (this.#lane.failure !== undefined) return this.#doomed();
    // A later attempt's final record is the fence most likely to refuse: keep its failure its own.
    if (!this.#sawFailure && this.#part.stamp.attempt === 1) {
      if (final?.grouped) this.#lane.addGrouped(final.grouped);
      else if (final) {
        const { text, params } = sendable(final);
        // Written with literals, it leads the lane's next message; otherwise it goes now, prepared.
        if (params.length === 0) this.#lane.deferFinal(text);
        else {
          const prepare = this.#scheduler.prepares(text);
          this.#scheduler.pipeline(this.#lane, this.#connection.unsafe(text, params as never[], { prepare }));
        }
      }
      const committed = this.#scheduler.joinGroup(this.#lane, this.#savepoint, this.#part, this.#heldMs());
      handlerDone?.();
      return committed;
    }
    return this.#commitChecked(final, handlerDone);
  }

  async rollback(): Promise<void> {
    if (this.#ended) return;
    this.#ended = true;
    if (this.#connectionLost !== undefined) {
      this.#scheduler.broken(this.#lane, this.#connectionLost);
      return;
    }
    await this.#undoOnceGroupDecides();
  }

  /**
   * Runs the job's deferred constraints, its final record and the release, and waits for them: the
   * job saw a statement fail, or its final record is the fence. A failure of any is its own.
   */
  async #commitChecked(final: FinalStatement | undefined, handlerDone: (() => void) | undefined): Promise<void> {
    const deferred = this.#connection.unsafe(DEFERRED_CHECKS_SQL).execute();
    const statement = final ? sendable(final) : undefined;
    const finalQuery = statement
      ? this.#connection
          .unsafe(statement.text, statement.params as never[], {
            prepare: statement.params.length > 0 && this.#scheduler.prepares(statement.text),
          })
          .execute()
      : Promise.resolve();
    const release = this.#connection.unsafe(`release savepoint ${this.#savepoint}`).execute();
    let settled: PromiseSettledResult<unknown>[];
    try {
      settled = await withinDeadline(
        Promise.allSettled([this.#setup, deferred, finalQuery, release]),
        COMMIT_DEADLINE_MS,
        "the end of a job's savepoint",
      );
    } catch (error) {
      this.#scheduler.broken(this.#lane, error);
      throw error;
    }
    const failure = settled.find((result) => result.status === "rejected")?.reason;
    if (failure === undefined) {
      // Released already: nothing left for the next job to release.
      const committed = this.#scheduler.joinGroup(this.#lane, undefined, this.#part, this.#heldMs());
      handlerDone?.();
      return committed;
    }
    if (isConnectionError(failure)) return this.#lost(failure);
    if (this.#lane.failure !== undefined) return this.#doomed();
    await this.#undoOnceGroupDecides();
    if ((failure as { code?: unknown }).code === IN_FAILED_TRANSACTION) {
      throw new JetfnError(
        "E_HANDLER_FAILED",
        "a statement failed inside the invocation's transaction (its error was caught by the handler), so its writes were rolled back",
        { cause: failure },
      );
    }
    throw failure;
  }

  /**
   * Undoes the job's writes; when earlier members of the transaction wait for its COMMIT, resolves
   * only once that COMMIT is decided. The job's failure may stem from their uncommitted writes: a
   * key one of them took, the fence refusing a later attempt of a job whose first attempt is one of
   * them, or only what it read of them (a handler that fails because a row exists, or because a
   * balance is too low). Alone, the job would have seen only what they commit. So its failure
   * stands only if they commit; if they do not, it runs again alone too (a SharedCommitError).
   * Told it failed, its last attempt (or a NonRetryableError) would bury the job for writes that
   * never happened.
   */
  async #undoOnceGroupDecides(): Promise<void> {
    const group = this.#lane.members > 0 ? this.#scheduler.outcome(this.#lane) : undefined;
    this.#undo();
    await group;
  }

  /** Rolls back to the savepoint without waiting (it cannot fail while the savepoint exists). */
  #undo(): void {
    if (this.#lane.failure === undefined) {
      this.#scheduler.pipeline(this.#lane, this.#connection.unsafe(`rollback to savepoint ${this.#savepoint}`));
    }
    this.#scheduler.leave(this.#lane, this.#savepoint, this.#part.stamp.functionName, this.#heldMs());
  }

  /** The shared transaction was doomed before this job's part could count: it runs again alone. */
  #doomed(): never {
    const failure = this.#lane.failure;
    this.#scheduler.leave(this.#lane, this.#savepoint, this.#part.stamp.functionName, this.#heldMs());
    throw new SharedCommitError(this.#lane.members + 1, failure);
  }

  #lost(error: unknown): never {
    this.#scheduler.broken(this.#lane, error);
    throw error;
  }

  #failed(error: unknown): void {
    this.#sawFailure = true;
    if (isConnectionError(error)) this.#connectionLost ??= error;
  }

  #heldMs(): number {
    return performance.now() - this.#started;
  }
}
