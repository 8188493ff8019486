import type { Sql } from "postgres";
import { JetfnError } from "../errors";
import { isConnectionError } from "./client";
import { PREPARED, shouldPrepare } from "./prepared-statements";
import {
  COMMIT_DEADLINE_MS,
  type FinalStatement,
  openingWithStamp,
  ROLLBACK_DEADLINE_MS,
  STAMP_SQL,
  stampParameters,
  type TransactionStamp,
  withinDeadline,
} from "./transaction-parts";
import { WatchedConnection } from "./watched-connection";

/**
 * Group commit. Each job still gets a transaction of its own as far as it can tell: its writes run
 * in a savepoint, stamped with its name, and are undone alone when it fails. But jobs that finish
 * while others wait for a connection share one real transaction and one COMMIT: the COMMIT (and its
 * WAL flush) is paid once per group instead of once per job. A job's outcome is only reported
 * (and its message acked) after the group's COMMIT.
 *
 * A lane is one connection carrying such shared transactions, one job at a time (savepoints
 * nest, so two jobs cannot interleave in one transaction). When a job finishes and another is
 * waiting, the lane passes to it and the COMMIT waits; when nobody waits, it commits at once, so
 * an idle runtime adds no latency.
 */
export interface CommitGroups {
  /** Waits for a lane and opens the job's savepoint on it (sent together with its first query). */
  seat(stamp: TransactionStamp): Promise<Seat>;
  /** Commits what is pending and gives the connections back. */
  close(): Promise<void>;
}

/** One job's savepoint on a lane. */
export interface Seat {
  readonly connection: WatchedConnection;
  /** Settles once the savepoint and the stamp have run. */
  readonly setup: Promise<unknown>;
  /**
   * Runs `final` and releases the savepoint, then resolves once the group has committed.
   * `released` is called in between: the job's own work is done, only the COMMIT is pending.
   */
  commit(final?: FinalStatement, released?: () => void): Promise<void>;
  /** Undoes the job's writes and hands the lane on. */
  rollback(): Promise<void>;
}

export interface CommitGroupOptions {
  /** Connections carrying shared transactions. */
  lanes: number;
  /**
   * Most jobs in one transaction. Each is a subtransaction, and Postgres caches only 64 of them
   * per transaction before every snapshot gets slower. @default 32
   */
  maxMembers?: number;
  /**
   * A function whose jobs usually hold their savepoint longer than this never joins a group that
   * has members waiting to commit, so quick jobs are not held back by slow ones. @default 20
   */
  maxSharedHoldMs?: number;
}

/** Thrown to every job of a group whose COMMIT failed: each runs again, in a transaction of its own. */
export class SharedCommitError extends JetfnError {
  readonly sharedCommitFailed = true;

  constructor(members: number, cause: unknown) {
    super(
      "E_DATABASE_UNAVAILABLE",
      `the transaction this job shared with ${members - 1} other(s) did not commit: ${(cause as Error)?.message ?? cause}`,
      { cause },
    );
  }
}

/** True when an error (or its cause) says a shared COMMIT failed. */
export function isSharedCommitFailure(error: unknown): boolean {
  return (
    (error as { sharedCommitFailed?: unknown } | undefined)?.sharedCommitFailed === true ||
    (error as { cause?: { sharedCommitFailed?: unknown } } | undefined)?.cause?.sharedCommitFailed === true
  );
}

export function createCommitGroups(sql: Sql, options: CommitGroupOptions): CommitGroups {
  return new LaneScheduler(sql, options);
}

interface Member {
  resolve: () => void;
  reject: (error: unknown) => void;
}

interface Waiter {
  stamp: TransactionStamp;
  resolve: (seat: Seat) => void;
  reject: (error: unknown) => void;
}

class Lane {
  connection: WatchedConnection | undefined;
  /** A transaction is open on the connection. */
  open = false;
  /** A job holds the lane, or a COMMIT or connect is under way. */
  busy = false;
  members: Member[] = [];
  savepoints = 0;
}

/** Weight of the newest hold time in a function's running average. */
const HOLD_AVERAGE_WEIGHT = 0.2;
/** The code Postgres answers with inside a transaction an earlier statement already failed. */
const IN_FAILED_TRANSACTION = "25P02";

class LaneScheduler implements CommitGroups {
  readonly #sql: Sql;
  readonly #lanes: Lane[];
  readonly #maxMembers: number;
  readonly #maxSharedHoldMs: number;
  readonly #waiting: Waiter[] = [];
  readonly #holdMs = new Map<string, number>();
  #idle: (() => void) | undefined;

  constructor(sql: Sql, options: CommitGroupOptions) {
    this.#sql = sql;
    this.#lanes = Array.from({ length: Math.max(1, options.lanes) }, () => new Lane());
    this.#maxMembers = options.maxMembers ?? 32;
    this.#maxSharedHoldMs = options.maxSharedHoldMs ?? 20;
  }

  seat(stamp: TransactionStamp): Promise<Seat> {
    return new Promise<Seat>((resolve, reject) => {
      this.#waiting.push({ stamp, resolve, reject });
      this.#dispatch();
    });
  }

  async close(): Promise<void> {
    while (this.#lanes.some((lane) => lane.busy || lane.members.length > 0) || this.#waiting.length > 0) {
      await new Promise<void>((resolve) => {
        this.#idle = resolve;
      });
    }
    for (const lane of this.#lanes) {
      lane.connection?.release();
      lane.connection = undefined;
    }
  }

  /** Gives free lanes to waiting jobs, and commits lanes nobody is waiting for. */
  #dispatch(): void {
    for (const lane of this.#lanes) {
      if (lane.busy) continue;
      const next = this.#waiting[0];
      const mustCommitFirst =
        lane.members.length > 0 &&
        (next === undefined || lane.members.length >= this.#maxMembers || this.#isSlow(next.stamp.functionName));
      if (mustCommitFirst) void this.#commit(lane);
      else if (next) {
        this.#waiting.shift();
        void this.#grant(lane, next);
      }
    }
    if (this.#idle && this.#lanes.every((lane) => !lane.busy && lane.members.length === 0)) {
      const idle = this.#idle;
      this.#idle = undefined;
      idle();
    }
  }

  #isSlow(functionName: string): boolean {
    return (this.#holdMs.get(functionName) ?? 0) > this.#maxSharedHoldMs;
  }

  #held(functionName: string, ms: number): void {
    const average = this.#holdMs.get(functionName);
    this.#holdMs.set(functionName, average === undefined ? ms : average + HOLD_AVERAGE_WEIGHT * (ms - average));
  }

  async #grant(lane: Lane, waiter: Waiter): Promise<void> {
    lane.busy = true;
    try {
      if (lane.connection?.closed) this.#reset(lane);
      lane.connection ??= await WatchedConnection.reserve(this.#sql);
    } catch (error) {
      lane.busy = false;
      waiter.reject(error);
      this.#dispatch();
      return;
    }
    const connection = lane.connection;
    // Sent without waiting: they travel in the same write as the job's first query.
    const savepoint = `jetfn_job_${++lane.savepoints}`;
    // A released savepoint keeps its SET LOCALs (search_path, role, app.tenant...): undo what
    // earlier jobs of this transaction set, so each job starts from the session's settings.
    const opening = [
      ...(lane.open ? [] : ["begin"]),
      `savepoint ${savepoint}`,
      ...(lane.savepoints > 1 ? ["reset all", "reset role"] : []),
    ].join("; ");
    lane.open = true;
    const together = openingWithStamp(opening, waiter.stamp);
    const setup = together
      ? connection.unsafe(together).execute()
      : Promise.all([
          connection.unsafe(opening).execute(),
          connection.unsafe(STAMP_SQL, stampParameters(waiter.stamp), PREPARED).execute(),
        ]);
    setup.catch(() => undefined);
    waiter.resolve(new LaneSeat(this, lane, connection, savepoint, setup, waiter.stamp.functionName));
  }

  /** Whether a statement of a job runs prepared (see prepared-statements.ts). */
  prepares(text: string): boolean {
    return shouldPrepare(this.#sql, text);
  }

  /** A seat finished cleanly: it waits for the group's COMMIT, and the lane moves on. */
  joinGroup(lane: Lane, functionName: string, heldMs: number): Promise<void> {
    this.#held(functionName, heldMs);
    const committed = new Promise<void>((resolve, reject) => lane.members.push({ resolve, reject }));
    lane.busy = false;
    this.#dispatch();
    return committed;
  }

  /** A seat rolled back to its savepoint: the lane moves on, its group unharmed. */
  leave(lane: Lane, functionName: string, heldMs: number): void {
    this.#held(functionName, heldMs);
    lane.busy = false;
    this.#dispatch();
  }

  /** The lane's connection failed or stopped answering: its open transaction is lost. */
  broken(lane: Lane, error: unknown, answered: boolean): void {
    const members = lane.members;
    lane.members = [];
    if (answered) lane.connection?.release();
    this.#reset(lane);
    for (const member of members) member.reject(new SharedCommitError(members.length, error));
    this.#dispatch();
  }

  /** Forgets the lane's connection and whatever transaction it had open. */
  #reset(lane: Lane): void {
    lane.connection = undefined;
    lane.open = false;
    lane.savepoints = 0;
    lane.busy = false;
  }

  async #commit(lane: Lane): Promise<void> {
    lane.busy = true;
    const members = lane.members;
    lane.members = [];
    const connection = lane.connection as WatchedConnection;
    let answered = false;
    try {
      const result = await withinDeadline(connection.unsafe("commit").execute(), COMMIT_DEADLINE_MS, "COMMIT");
      answered = true;
      if ((result as { command?: string }).command === "ROLLBACK") {
        throw new Error("Postgres rolled the shared transaction back");
      }
    } catch (error) {
      lane.members = members;
      this.broken(lane, error, answered || !isUnanswered(error));
      return;
    }
    lane.open = false;
    lane.savepoints = 0;
    lane.busy = false;
    for (const member of members) member.resolve();
    this.#dispatch();
  }
}

class LaneSeat implements Seat {
  readonly connection: WatchedConnection;
  readonly setup: Promise<unknown>;
  readonly #scheduler: LaneScheduler;
  readonly #lane: Lane;
  readonly #savepoint: string;
  readonly #functionName: string;
  readonly #started = performance.now();
  #ended = false;

  constructor(
    scheduler: LaneScheduler,
    lane: Lane,
    connection: WatchedConnection,
    savepoint: string,
    setup: Promise<unknown>,
    functionName: string,
  ) {
    this.#scheduler = scheduler;
    this.#lane = lane;
    this.connection = connection;
    this.#savepoint = savepoint;
    this.setup = setup;
    this.#functionName = functionName;
  }

  async commit(final?: FinalStatement, released?: () => void): Promise<void> {
    if (this.#ended) throw new JetfnError("E_INTERNAL", "the job's savepoint was already ended");
    this.#ended = true;
    const finalQuery = final
      ? this.connection.unsafe(final.text, final.params, { prepare: this.#scheduler.prepares(final.text) }).execute()
      : Promise.resolve();
    const release = this.connection.unsafe(`release savepoint ${this.#savepoint}`).execute();
    let settled: PromiseSettledResult<unknown>[];
    try {
      settled = await withinDeadline(
        Promise.allSettled([this.setup, finalQuery, release]),
        COMMIT_DEADLINE_MS,
        "the end of a job's savepoint",
      );
    } catch (error) {
      this.#scheduler.broken(this.#lane, error, false);
      throw error;
    }
    const failure = settled.find((result) => result.status === "rejected")?.reason;
    if (failure === undefined) {
      const committed = this.#scheduler.joinGroup(this.#lane, this.#functionName, performance.now() - this.#started);
      released?.();
      return committed;
    }
    await this.#undo(failure);
    if ((failure as { code?: unknown }).code === IN_FAILED_TRANSACTION) {
      throw new JetfnError(
        "E_HANDLER_FAILED",
        "a statement failed inside the invocation's transaction (its error was caught by the handler), so its writes were rolled back",
        { cause: failure },
      );
    }
    throw failure;
  }

  async rollback(): Promise<void> {
    if (this.#ended) return;
    this.#ended = true;
    await this.#undo(undefined).catch(() => undefined);
  }

  /** Rolls back to the savepoint and hands the lane on (or gives the lane up if that fails). */
  async #undo(cause: unknown): Promise<void> {
    if (isConnectionError(cause)) {
      this.#scheduler.broken(this.#lane, cause, true);
      return;
    }
    const rollback = this.connection.unsafe(`rollback to savepoint ${this.#savepoint}`).execute();
    const release = this.connection.unsafe(`release savepoint ${this.#savepoint}`).execute();
    try {
      await withinDeadline(
        Promise.all([this.setup.catch(() => undefined), rollback, release]),
        ROLLBACK_DEADLINE_MS,
        "ROLLBACK",
      );
    } catch (error) {
      this.#scheduler.broken(this.#lane, error, !isUnanswered(error));
      return;
    }
    this.#scheduler.leave(this.#lane, this.#functionName, performance.now() - this.#started);
  }
}

/** True for the deadline's own error: the connection never answered and must not be reused. */
function isUnanswered(error: unknown): boolean {
  return (error as JetfnError | undefined)?.code === "E_DATABASE_UNAVAILABLE";
}
