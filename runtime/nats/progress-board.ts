import type { KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import type { Logger } from "pino";
import type { FlowLabels } from "../flow/flow-labels";
import { ensureBucket } from "./buckets";
import { type Replication, SINGLE_REPLICA } from "./stream-replicas";
import { PROGRESS_BUCKET } from "./subjects";

/** What `status` shows of a job that is running right now. */
export interface ProgressEntry {
  status: "running";
  fn: string;
  attempt: number;
  startedAt: string;
  done?: number;
  total?: number;
  updatedAt: string;
  /** When the job was stored in JetStream (ISO 8601), so a running job's page can say it. */
  enqueuedAt?: string;
  /** The job's input, when its JSON is at most PROGRESS_INPUT_MAX_BYTES (the entry is rewritten often). */
  input?: unknown;
  /** Its priority and debounce or singleton key. */
  labels?: FlowLabels;
}

/** What a running job's entry shows besides its progress. */
export interface ProgressDetails {
  enqueuedAt?: string;
  input?: unknown;
  labels?: FlowLabels;
}

/** Larger inputs are left off the board: it is rewritten up to four times a second per job. */
export const PROGRESS_INPUT_MAX_BYTES = 8_192;

/** The progress of one running job, written for other processes to read. */
export interface ProgressHandle {
  update(done: number, total: number | undefined): void;
  /** Stops writing and removes the entry (the final record takes over). */
  finish(): void;
}

/** Shared board of running jobs, backed by a JetStream key-value bucket. */
export interface ProgressBoard {
  begin(id: string, fn: string, attempt: number, details?: ProgressDetails): ProgressHandle;
  get(id: string): Promise<ProgressEntry | undefined>;
}

/** A job shows as running once it has run this long (quicker jobs are never written). */
export const RUNNING_MARK_AFTER_MS = 1_000;
/** At most one write per job per interval; the newest value wins. */
export const PROGRESS_WRITE_INTERVAL_MS = 250;
const ENTRY_TTL_MS = 24 * 60 * 60 * 1000;

/** Opens the progress bucket, or creates it with `replication`. */
export async function openProgressBoard(
  nc: NatsConnection,
  logger: Logger,
  replication: Replication = SINGLE_REPLICA,
): Promise<ProgressBoard> {
  const kv = await ensureBucket(nc, PROGRESS_BUCKET, { ttl: ENTRY_TTL_MS }, replication);
  return new KvProgressBoard(kv, logger);
}

class KvProgressBoard implements ProgressBoard {
  readonly kv: KV;
  readonly logger: Logger;
  /**
   * Entries not written yet, oldest first (a Set keeps insertion order). One timer marks those
   * that have run for a second, instead of a timer per job: most jobs end long before.
   */
  readonly #unwritten = new Set<KvProgressHandle>();
  #sweep: NodeJS.Timeout | undefined;

  constructor(kv: KV, logger: Logger) {
    this.kv = kv;
    this.logger = logger;
  }

  begin(id: string, fn: string, attempt: number, details: ProgressDetails = {}): ProgressHandle {
    const handle = new KvProgressHandle(this, id, fn, attempt, details);
    this.#unwritten.add(handle);
    this.#sweep ??= this.#scheduleSweep(RUNNING_MARK_AFTER_MS);
    return handle;
  }

  /** The entry is written (or its job ended): the sweep no longer looks at it. */
  forget(handle: KvProgressHandle): void {
    this.#unwritten.delete(handle);
  }

  async get(id: string): Promise<ProgressEntry | undefined> {
    const entry = await this.kv.get(id);
    if (entry?.operation !== "PUT" || entry.length === 0) return undefined;
    return entry.json<ProgressEntry>();
  }

  #scheduleSweep(delay: number): NodeJS.Timeout {
    // Unreferenced: a running job, not its board, keeps the process alive.
    return setTimeout(() => this.#markRunning(), delay).unref();
  }

  /** Writes the entries of jobs running for a second, then waits for the next oldest to get there. */
  #markRunning(): void {
    this.#sweep = undefined;
    const now = performance.now();
    for (const handle of this.#unwritten) {
      const due = handle.since + RUNNING_MARK_AFTER_MS;
      if (due > now) {
        this.#sweep = this.#scheduleSweep(due - now);
        return;
      }
      this.#unwritten.delete(handle);
      handle.write();
    }
  }
}

/**
 * One job's entry on the board: written once the job has run for a second (quicker jobs are
 * never written; the board's sweep marks them), then at most once per interval while it reports
 * progress.
 */
class KvProgressHandle implements ProgressHandle {
  readonly #board: KvProgressBoard;
  readonly #id: string;
  readonly #fn: string;
  readonly #attempt: number;
  /** As given; cut to what is shown (shownDetails) only when first written: most jobs end before. */
  #details: ProgressDetails;
  #shown = false;
  readonly #startedAt = Date.now();
  /** When it began on the monotonic clock: a wall clock set back would hold up the sweep. */
  readonly since = performance.now();
  #done: number | undefined;
  #total: number | undefined;
  #written = false;
  #finished = false;
  #lastWrite = 0;
  #timer: NodeJS.Timeout | undefined;

  constructor(board: KvProgressBoard, id: string, fn: string, attempt: number, details: ProgressDetails) {
    this.#board = board;
    this.#details = details;
    this.#id = id;
    this.#fn = fn;
    this.#attempt = attempt;
  }

  update(done: number, total: number | undefined): void {
    this.#done = done;
    if (total !== undefined) this.#total = total;
    // The first progress is written at once, without waiting for the running mark.
    if (!this.#written) this.#board.forget(this);
    if (this.#timer === undefined) {
      const delay = Math.max(0, PROGRESS_WRITE_INTERVAL_MS - (Date.now() - this.#lastWrite));
      this.#timer = setTimeout(() => this.write(), delay);
    }
  }

  finish(): void {
    this.#finished = true;
    clearTimeout(this.#timer);
    if (!this.#written) {
      this.#board.forget(this);
      return;
    }
    this.#board.kv.delete(this.#id).catch((error: unknown) => {
      this.#board.logger.debug({ err: error, invocationId: this.#id }, "Removing progress failed.");
    });
  }

  write(): void {
    this.#timer = undefined;
    if (this.#finished) return;
    this.#written = true;
    this.#lastWrite = Date.now();
    if (!this.#shown) {
      this.#details = shownDetails(this.#details);
      this.#shown = true;
    }
    const entry: ProgressEntry = {
      ...this.#details,
      status: "running",
      fn: this.#fn,
      attempt: this.#attempt,
      startedAt: new Date(this.#startedAt).toISOString(),
      updatedAt: new Date(this.#lastWrite).toISOString(),
    };
    if (this.#done !== undefined) entry.done = this.#done;
    if (this.#total !== undefined) entry.total = this.#total;
    this.#board.kv.put(this.#id, JSON.stringify(entry)).catch((error: unknown) => {
      this.#board.logger.debug({ err: error, invocationId: this.#id }, "Writing progress failed.");
    });
  }
}

/** The details as written: the input only when small enough to rewrite with every update. */
function shownDetails(details: ProgressDetails): ProgressDetails {
  const shown: ProgressDetails = {};
  if (details.enqueuedAt !== undefined) shown.enqueuedAt = details.enqueuedAt;
  if (details.labels !== undefined && Object.keys(details.labels).length > 0) shown.labels = details.labels;
  if (details.input !== undefined) {
    const json = JSON.stringify(details.input);
    if (json !== undefined && Buffer.byteLength(json) <= PROGRESS_INPUT_MAX_BYTES) shown.input = details.input;
  }
  return shown;
}
