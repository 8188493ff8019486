import type { PendingQuery, Row } from "postgres";
import { DEFERRED_CHECKS_SQL } from "./constraint-modes";
import type { QueryMode } from "./lazy-query";
import type { FinalStatement, TransactionStamp } from "./transaction-parts";
import type { WatchedConnection } from "./watched-connection";

/**
 * A lane of group commit (see commit-groups.ts): one connection carrying shared transactions, and
 * the state of the one open on it. The lane owns that state; the scheduler and the seats change it
 * only through its methods.
 */
export class Lane {
  /** The lane's connection, reserved from the pool by the scheduler. */
  connection: WatchedConnection | undefined;
  /** A job holds the lane, or a COMMIT or connect is under way (the scheduler's mark). */
  busy = false;
  #open = false;
  #members: Member[] = [];
  #savepoints = 0;
  /** The previous job's final record (written with literals), sent with the next opening or the COMMIT. */
  #pendingFinal: string | undefined;
  /** The previous job's savepoint, released by the next statement sent (it need not be waited for). */
  #pendingRelease: string | undefined;
  /** Members' grouped final rows (see FinalStatement.grouped), by statement, written before the COMMIT. */
  readonly #grouped = new Map<string, string[]>();
  #sealed = false;
  #failure: unknown;
  /** Counts the transactions ended on the lane: which one a statement was sent in. */
  #transaction = 0;

  /** A transaction is open on the connection. */
  get open(): boolean {
    return this.#open;
  }

  /** Job parts opened in the open transaction. */
  get savepoints(): number {
    return this.#savepoints;
  }

  /** Jobs waiting for the open transaction's COMMIT. */
  get members(): number {
    return this.#members.length;
  }

  /** A job of the open transaction may have created a temporary object: it commits before anyone else joins. */
  get sealed(): boolean {
    return this.#sealed;
  }

  /** A statement sent without waiting failed: the open transaction can only be rolled back. */
  get failure(): unknown {
    return this.#failure;
  }

  /**
   * Opens the next job's part: the message (one simple-protocol write) that leads with the previous
   * job's deferred constraints, final record and release, begins the transaction if none is open, and
   * opens the savepoint; `then` ends it.
   */
  openPart(then: readonly string[]): { savepoint: string; message: string } {
    const later = this.#open;
    const savepoint = `jetfn_job_${++this.#savepoints}`;
    const message = [
      // Under the previous job's stamp, before the next mark: what its deferred constraints write is its own.
      ...(later ? [DEFERRED_CHECKS_SQL] : []),
      ...(this.#pendingFinal ? [this.#pendingFinal] : []),
      ...(this.#pendingRelease ? [`release savepoint ${this.#pendingRelease}`] : []),
      ...(later ? [] : ["begin"]),
      `savepoint ${savepoint}`,
      // A released savepoint keeps its SET LOCALs (search_path, role, app.tenant...): undo what
      // earlier jobs of this transaction set, so each job starts from the session's settings.
      ...(later ? ["reset all", "reset role"] : []),
      ...then,
    ].join("; ");
    this.#pendingFinal = undefined;
    this.#pendingRelease = undefined;
    this.#open = true;
    return { savepoint, message };
  }

  /** No job after the current one joins the open transaction. */
  seal(): void {
    this.#sealed = true;
  }

  /** A final record written with literals: it leads the lane's next message. */
  deferFinal(text: string): void {
    this.#pendingFinal = text;
  }

  addGrouped({ text, row }: NonNullable<FinalStatement["grouped"]>): void {
    const rows = this.#grouped.get(text);
    if (rows) rows.push(row);
    else this.#grouped.set(text, [row]);
  }

  /** The job holding the lane is done with it; its savepoint, if given, is released by the next statement sent. */
  leave(savepoint: string | undefined): void {
    this.#pendingRelease = savepoint;
    this.busy = false;
  }

  /** A job waits for the open transaction's COMMIT. */
  join(member: Member): void {
    this.#members.push(member);
  }

  /** The jobs waiting for the COMMIT, handed to whoever ends the transaction. */
  takeMembers(): Member[] {
    const members = this.#members;
    this.#members = [];
    return members;
  }

  /** Gives back members taken by {@link takeMembers} when the transaction's end is left to another path. */
  restoreMembers(members: Member[]): void {
    this.#members = members;
  }

  /** The statements that precede the COMMIT: the last job's final record, then each grouped final statement. */
  takeClosing(): { final: string | undefined; grouped: [text: string, rows: string[]][] } {
    const final = this.#pendingFinal;
    this.#pendingFinal = undefined;
    return { final, grouped: [...this.#grouped] };
  }

  /**
   * What a statement sent without waiting does when it fails: it dooms the transaction it was sent
   * in. One that fails late, after that transaction was abandoned, must not doom the next one.
   */
  dooms(): (error: unknown) => void {
    const transaction = this.#transaction;
    return (error) => {
      if (this.#transaction === transaction) this.#failure ??= error;
    };
  }

  /** Forgets the transaction that was open: the next job begins a new one. */
  closeTransaction(): void {
    this.#transaction++;
    this.#open = false;
    this.#savepoints = 0;
    this.#pendingFinal = undefined;
    this.#pendingRelease = undefined;
    this.#grouped.clear();
    this.#failure = undefined;
    this.#sealed = false;
    this.busy = false;
  }
}

/** A job waiting for a lane's COMMIT. */
export interface Member {
  resolve: () => void;
  reject: (error: unknown) => void;
  /** Whose writes the transaction keeps, and where they begin (none for a job that rolled its savepoint back). */
  part?: SeatPart;
}

/**
 * A job's part of a shared transaction: its stamp, and the audit mark read as the part began (null
 * for the part that began the transaction).
 */
export interface SeatPart {
  stamp: TransactionStamp;
  mark: Promise<string | null>;
}

/** What a seat asks of the scheduler that owns its lane. */
export interface LaneOwner {
  /** Sends a statement of the lane's transaction without waiting; its failure dooms the transaction. */
  pipeline(lane: Lane, query: PendingQuery<Row[]>): void;
  /** The seat's part is kept: resolves once the group has committed. */
  joinGroup(lane: Lane, savepoint: string | undefined, part: SeatPart, heldMs: number): Promise<void>;
  /** Resolves once the lane's open transaction commits; rejects with a SharedCommitError if it does not. */
  outcome(lane: Lane): Promise<void>;
  /** The seat is done with the lane. */
  leave(lane: Lane, savepoint: string | undefined, functionName: string, heldMs: number): void;
  /** The lane's connection failed or stopped answering. */
  broken(lane: Lane, error: unknown): void;
  /** Whether a statement with parameters runs prepared. */
  prepares(text: string): boolean;
}

/** One job's savepoint on a lane. */
export interface Seat {
  /**
   * No job after this one joins its transaction: it may create a temporary object, which lives
   * until the COMMIT and would shadow, for a later member, an app table of the same name.
   */
  seal(): void;
  /** Runs one of the job's statements on the lane. */
  query(text: string, params: unknown[], options: { prepare?: boolean } | undefined, mode: QueryMode): Promise<unknown>;
  /**
   * Runs `final` and releases the savepoint, then resolves once the group has committed.
   * `handlerDone` is called in between: the job's own work is done, only the COMMIT is pending.
   */
  commit(final?: FinalStatement, handlerDone?: () => void): Promise<void>;
  /**
   * Undoes the job's writes and hands the lane on. A job that failed while others wait for the
   * COMMIT hears only after it (its failure may stem from what they wrote or what it read of
   * that), and a SharedCommitError if it failed.
   */
  rollback(): Promise<void>;
}
