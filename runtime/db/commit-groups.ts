import pino, { type Logger } from "pino";
import type { PendingQuery, Row, Sql } from "postgres";
import { JetfnError } from "../support/errors";
import { DEFERRED_CHECKS_SQL, DeclaredModes } from "./constraint-modes";
import { AUDIT_MARK_SQL, auditMark, GROUP_CHECK_SQL, type GroupMember, groupMembers } from "./invocation-checks";
import { Lane, type LaneOwner, type Member, type Seat, type SeatPart } from "./lane";
import { LaneSeat } from "./lane-seat";
import { PREPARED, shouldPrepare } from "./prepared-statements";
import { endTransaction } from "./session-reset";
import { SharedCommitError } from "./shared-commit-error";
import {
  abandon,
  COMMIT_DEADLINE_MS,
  isUnanswered,
  stampStatements,
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
 * an idle runtime adds no latency (under load, after the current turn: see #endAfterTurn).
 *
 * The lane does not wait for a cleanly finished job's final record and savepoint release: the
 * release travels in one write with the next job's savepoint, stamp and first query, so a job costs
 * one round trip. Final records that can be grouped (the members' success records) are written
 * together by one statement sent with the COMMIT; others lead the next job's message. Should one of
 * those statements fail after all (the fence, or a statement the job never awaited), Postgres
 * refuses everything after it, the lane rolls the whole transaction back, and each member runs
 * again alone ({@link SharedCommitError}).
 */
export interface CommitGroups {
  /**
   * Whether a job of this function takes a lane. Not when its jobs usually hold their savepoint
   * longer than maxSharedHoldMs: a lane held that long is closed to quick jobs, and next to so long a
   * hold a shared COMMIT saves little. Such a job runs in a transaction of its own, and says how
   * long it held it ({@link held}), so a function that turns quick again returns to the lanes.
   */
  takes(functionName: string): boolean;
  /** Notes how long a job of this function held a transaction of its own. */
  held(functionName: string, ms: number): void;
  /** Waits for a lane and opens the job's savepoint on it (sent together with its first query). */
  seat(stamp: TransactionStamp): Promise<Seat>;
  /** Commits what is pending and gives the connections back. */
  close(): Promise<void>;
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
   * A function whose jobs usually hold their savepoint longer than this takes no lane (see
   * {@link CommitGroups.takes}), so quick jobs are neither held back by slow ones nor left
   * without a lane. @default 20
   */
  maxSharedHoldMs?: number;
  /** Where a failure to read the declared constraint modes is told. @default no logging */
  logger?: Logger;
}

export function createCommitGroups(sql: Sql, options: CommitGroupOptions): CommitGroups {
  return new LaneScheduler(sql, options);
}

interface Waiter {
  stamp: TransactionStamp;
  resolve: (seat: Seat) => void;
  reject: (error: unknown) => void;
}

/**
 * How long after a job last had to queue for a lane the lanes linger a turn before committing (see
 * #endAfterTurn). Only under load: there, jobs already join groups while others wait for lanes. A
 * quiet runtime commits each job at once, so a lone job's writes and row locks never wait for a job
 * that joins and then waits itself (on a call whose transaction needs one of those locks, say).
 */
const LINGER_AFTER_QUEUE_MS = 1_000;

/** The order #dispatch looks at lanes in: those with a transaction open, then the others. */
const OPEN_FIRST = [true, false] as const;

/** Weight of the newest hold time in a function's running average. */
const HOLD_AVERAGE_WEIGHT = 0.2;

class LaneScheduler implements CommitGroups, LaneOwner {
  readonly #sql: Sql;
  readonly #lanes: Lane[];
  readonly #maxMembers: number;
  readonly #maxSharedHoldMs: number;
  readonly #waiting: Waiter[] = [];
  readonly #holdMs = new Map<string, number>();
  readonly #modes: DeclaredModes;
  /** Lanes holding their open transaction for a read of the modes under way (see #awaitModes). */
  readonly #awaitingModes = new Set<Lane>();
  /** Lanes whose transaction commits after this turn unless a job joins (see #endAfterTurn). */
  readonly #endingAfterTurn = new Set<Lane>();
  /** When a job last had to wait for a lane (performance.now()). */
  #queuedAt = Number.NEGATIVE_INFINITY;
  #idle: (() => void) | undefined;

  constructor(sql: Sql, options: CommitGroupOptions) {
    this.#sql = sql;
    this.#lanes = Array.from({ length: Math.max(1, options.lanes) }, () => new Lane());
    this.#maxMembers = options.maxMembers ?? 32;
    this.#maxSharedHoldMs = options.maxSharedHoldMs ?? 20;
    this.#modes = new DeclaredModes(sql, options.logger ?? pino({ enabled: false }));
  }

  takes(functionName: string): boolean {
    return !this.#isSlow(functionName);
  }

  held(functionName: string, ms: number): void {
    this.#held(functionName, ms);
  }

  seat(stamp: TransactionStamp): Promise<Seat> {
    return new Promise<Seat>((resolve, reject) => {
      this.#waiting.push({ stamp, resolve, reject });
      this.#dispatch();
      if (this.#waiting.length > 0) this.#queuedAt = performance.now();
    });
  }

  async close(): Promise<void> {
    while (this.#lanes.some((lane) => lane.busy || lane.open) || this.#waiting.length > 0) {
      await new Promise<void>((resolve) => {
        this.#idle = resolve;
      });
    }
    for (const lane of this.#lanes) {
      lane.connection?.release();
      lane.connection = undefined;
    }
    await this.#modes.close();
  }

  /** Gives free lanes to waiting jobs, and ends the transactions of lanes nobody is waiting for. */
  #dispatch(): void {
    // Once per round: a lane told it may go on with a later part gets the statements that said so.
    const modes = this.#modes.statements;
    // Lanes with a transaction open first: a waiting job joins a group before it begins one.
    for (const open of OPEN_FIRST) {
      for (const lane of this.#lanes) {
        if (lane.open === open) this.#offer(lane, modes);
      }
    }
    if (this.#idle && this.#lanes.every((lane) => !lane.busy && !lane.open)) {
      const idle = this.#idle;
      this.#idle = undefined;
      idle();
    }
  }

  /** Gives a free lane to the first waiting job, or ends its transaction (see #dispatch). */
  #offer(lane: Lane, modes: string | null | undefined): void {
    if (lane.busy || this.#awaitingModes.has(lane)) return;
    const next = this.#waiting[0];
    const mustEndFirst =
      lane.open &&
      (lane.failure !== undefined ||
        lane.sealed ||
        lane.savepoints >= this.#maxMembers ||
        // No statement gives a later part the declared modes (see constraint-modes.ts).
        modes === null ||
        (next !== undefined && lane.members > 0 && this.#isSlow(next.stamp.functionName)));
    if (mustEndFirst) void this.#end(lane);
    else if (next === undefined && lane.open) {
      // Under load only: a lone job of a quiet runtime commits at once (see LINGER_AFTER_QUEUE_MS).
      if (performance.now() - this.#queuedAt < LINGER_AFTER_QUEUE_MS) this.#endAfterTurn(lane);
      else void this.#end(lane);
    } else if (next && lane.open && modes === undefined) this.#awaitModes(lane);
    else if (next) {
      this.#waiting.shift();
      void this.#grant(lane, next, modes);
    }
  }

  /**
   * Nobody waits for the lane of a runtime under load: its transaction commits after this turn of
   * the event loop, unless a job reaches for the database in it and joins. Committed at once,
   * each group held only the jobs that had queued during the last COMMIT: with as many lanes as
   * running handlers, about ten. A turn lets handlers running now join too, and groups fill up
   * (fewer COMMITs, group checks and success records per job).
   */
  #endAfterTurn(lane: Lane): void {
    if (this.#endingAfterTurn.has(lane)) return;
    this.#endingAfterTurn.add(lane);
    setImmediate(() => {
      this.#endingAfterTurn.delete(lane);
      // A job that joined holds the lane (its leave looks again); a lane ended meanwhile is closed.
      if (lane.open && !lane.busy && !this.#awaitingModes.has(lane)) void this.#end(lane);
    });
  }

  /**
   * A later part needs the declared modes, and they were not read lately (or cannot be): the lane
   * holds its transaction for a read under way that began moments ago (started now if due), then
   * looks again; with none, it commits, and the next job begins a transaction, which needs none.
   */
  #awaitModes(lane: Lane): void {
    this.#modes.refresh();
    const arriving = this.#modes.arriving();
    if (!arriving) {
      void this.#end(lane);
      return;
    }
    this.#awaitingModes.add(lane);
    void arriving.then(() => {
      this.#awaitingModes.delete(lane);
      this.#dispatch();
    });
  }

  #isSlow(functionName: string): boolean {
    return (this.#holdMs.get(functionName) ?? 0) > this.#maxSharedHoldMs;
  }

  #held(functionName: string, ms: number): void {
    const average = this.#holdMs.get(functionName);
    this.#holdMs.set(functionName, average === undefined ? ms : average + HOLD_AVERAGE_WEIGHT * (ms - average));
  }

  /** `modes`: the statements a later part starts with (a string whenever the lane's transaction is open). */
  async #grant(lane: Lane, waiter: Waiter, modes: string | null | undefined): Promise<void> {
    let stamp: string;
    try {
      stamp = stampStatements(waiter.stamp);
    } catch (error) {
      // A stamp that cannot be written as SQL is the job's failure; the lane was never taken.
      waiter.reject(error);
      this.#dispatch();
      return;
    }
    // Killed while no job held it: its open transaction died with the session, and the jobs
    // waiting for its COMMIT must run again, never be told they committed with the next group.
    if (lane.connection?.closed) this.#drop(lane, closedBetweenJobs());
    // Busy from here on, also while a connection is reserved, so no other job is given the lane.
    lane.busy = true;
    try {
      lane.connection ??= await WatchedConnection.reserve(this.#sql);
    } catch (error) {
      lane.busy = false;
      waiter.reject(error);
      this.#dispatch();
      return;
    }
    const connection = lane.connection;
    // Sent without waiting: they travel in the same write as the job's first query. The previous
    // job's deferred constraints, final record and release lead the same simple-protocol message:
    // one round of the server's replies instead of one per statement. A later part then starts
    // from the declared constraint modes (see constraint-modes.ts), and the audit mark ends it: the
    // job's audit rows are those written after it (see invocation-checks.ts). The job that begins
    // the transaction needs neither: nothing was written or set in it before.
    const later = lane.open;
    // Read on the pool, beside this transaction, when due: for the parts after this one.
    this.#modes.refresh();
    const then = later ? [...(modes ? [modes] : []), stamp, AUDIT_MARK_SQL] : [stamp];
    const { savepoint, message } = lane.openPart(then);
    const setup = connection.unsafe(message).execute();
    // It carries earlier jobs' deferred constraints and final records: its failure dooms the whole
    // transaction. Noted at once, before the job's own statements (refused after it) are told why.
    setup.catch(lane.dooms());
    const mark = later ? setup.then(auditMark) : Promise.resolve(null);
    mark.catch(lane.dooms());
    waiter.resolve(new LaneSeat(this, lane, connection, savepoint, setup, { stamp: waiter.stamp, mark }));
  }

  /** Sends a statement of the lane's transaction without waiting; its failure dooms the transaction. */
  pipeline(lane: Lane, query: PendingQuery<Row[]>): void {
    query.execute().catch(lane.dooms());
  }

  /** Whether a statement of a job runs prepared (see prepared-statements.ts). */
  prepares(text: string): boolean {
    return shouldPrepare(this.#sql, text);
  }

  /** A seat finished cleanly: it waits for the group's COMMIT, and the lane moves on. */
  joinGroup(lane: Lane, savepoint: string | undefined, part: SeatPart, heldMs: number): Promise<void> {
    const committed = this.outcome(lane, part);
    this.leave(lane, savepoint, part.stamp.functionName, heldMs);
    return committed;
  }

  /** Waits for the lane's open transaction to commit, as its members do. */
  outcome(lane: Lane, part?: SeatPart): Promise<void> {
    return new Promise<void>((resolve, reject) => lane.join({ resolve, reject, part }));
  }

  /**
   * A seat is done with the lane (its savepoint kept or rolled back): the lane moves on. The
   * savepoint, unless already released, is released by the next statement the lane sends.
   */
  leave(lane: Lane, savepoint: string | undefined, functionName: string, heldMs: number): void {
    this.#held(functionName, heldMs);
    lane.leave(savepoint);
    this.#dispatch();
  }

  /** The lane's connection failed or stopped answering: its open transaction is lost. */
  broken(lane: Lane, error: unknown): void {
    const connection = lane.connection;
    this.#drop(lane, error);
    if (connection) void abandon(connection);
    this.#dispatch();
  }

  /** Forgets the lane's connection and its open transaction; the jobs waiting for its COMMIT run again alone. */
  #drop(lane: Lane, error: unknown): void {
    const members = lane.takeMembers();
    this.#reset(lane);
    for (const member of members) member.reject(new SharedCommitError(members.length, error));
  }

  /** Forgets the lane's connection and whatever transaction it had open. */
  #reset(lane: Lane): void {
    lane.closeTransaction();
    lane.connection = undefined;
  }

  /** Commits the lane's group (or rolls back a transaction with nothing to keep, or doomed). */
  async #end(lane: Lane): Promise<void> {
    const connection = lane.connection;
    if (!connection) {
      // Its session was given up meanwhile (see #unclean): what it held is lost, not committed.
      this.#drop(lane, closedBetweenJobs());
      this.#dispatch();
      return;
    }
    lane.busy = true;
    const members = lane.takeMembers();
    // Each part's mark came back with the message that opened it (long before, as a rule).
    const kept = await keptMembers(members);
    const keep = members.length > 0 && lane.failure === undefined && kept !== undefined;
    if (keep) {
      // Every audit row must be written under the stamp of the job whose part it was written in
      // (see invocation-checks.ts); a failed check dooms the transaction, and each job runs again
      // alone, where the culprit fails by itself.
      // The last job's deferred constraints first, under its stamp and role (see constraint-modes.ts);
      // then the check as the runtime's role: the last job's SET LOCAL ROLE lasts until COMMIT.
      this.pipeline(lane, connection.unsafe(`${DEFERRED_CHECKS_SQL}; reset role`));
      this.pipeline(lane, connection.unsafe(GROUP_CHECK_SQL, [groupMembers(kept)], PREPARED));
    }
    const closing = lane.takeClosing();
    if (keep && closing.final) this.pipeline(lane, connection.unsafe(closing.final));
    if (keep) {
      for (const [text, rows] of closing.grouped) {
        this.pipeline(lane, connection.unsafe(text, [`[${rows.join(",")}]`], PREPARED));
      }
    }
    let answered = false;
    // The reset goes behind it: the next transaction on the lane starts on a clean session.
    const { ended, reset } = endTransaction(connection, keep ? "commit" : "rollback");
    reset.catch(() => this.#unclean(lane, connection));
    try {
      const result = await withinDeadline(ended, COMMIT_DEADLINE_MS, keep ? "COMMIT" : "ROLLBACK");
      answered = true;
      if (lane.failure !== undefined) throw lane.failure;
      if (keep && (result as { command?: string }).command === "ROLLBACK") {
        throw new Error("Postgres rolled the shared transaction back");
      }
    } catch (error) {
      if (answered || !isUnanswered(error)) {
        // The transaction ended either way; the connection is fine unless the driver says otherwise.
        lane.closeTransaction();
        if (connection.closed) this.#reset(lane);
        for (const member of members) member.reject(new SharedCommitError(members.length, error));
        this.#dispatch();
        return;
      }
      lane.restoreMembers(members);
      this.broken(lane, error);
      return;
    }
    lane.closeTransaction();
    for (const member of members) member.resolve();
    this.#dispatch();
  }

  /**
   * The session could not be reset after a transaction: it must serve no one else. A job already
   * sent behind the reset hears that its connection closed, and runs again.
   */
  #unclean(lane: Lane, connection: WatchedConnection): void {
    if (connection.closed) return;
    if (lane.connection === connection && !lane.busy) {
      // A transaction opened on it since (waiting a turn for its COMMIT) dies with the session.
      if (lane.open) this.#drop(lane, closedBetweenJobs());
      else lane.connection = undefined;
    }
    connection.discard();
  }
}

/** The kept members with their audit marks; undefined when a mark never came (the lane is doomed then). */
async function keptMembers(members: readonly Member[]): Promise<GroupMember[] | undefined> {
  const parts = members.flatMap((member) => (member.part ? [member.part] : []));
  try {
    const marks = await Promise.all(parts.map((part) => part.mark));
    return parts.map((part, n) => ({ stamp: part.stamp, mark: marks[n] ?? null }));
  } catch {
    return undefined;
  }
}

function closedBetweenJobs(): JetfnError {
  return new JetfnError("E_DATABASE_UNAVAILABLE", "the connection closed before the shared transaction committed");
}
