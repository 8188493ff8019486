import { type KV, Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import type { Logger } from "pino";
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
}

/** The progress of one running job, written for other processes to read. */
export interface ProgressHandle {
  update(done: number, total: number | undefined): void;
  /** Stops writing and removes the entry (the final record takes over). */
  finish(): void;
}

/** Shared board of running jobs, backed by a JetStream key-value bucket. */
export interface ProgressBoard {
  begin(id: string, fn: string, attempt: number): ProgressHandle;
  get(id: string): Promise<ProgressEntry | undefined>;
  /** Live updates of one key until `signal` aborts. */
  watch(id: string, signal: AbortSignal): AsyncIterable<ProgressEntry | undefined>;
}

/** A job shows as running once it has run this long (quicker jobs are never written). */
export const RUNNING_MARK_AFTER_MS = 1_000;
/** At most one write per job per interval; the newest value wins. */
export const PROGRESS_WRITE_INTERVAL_MS = 250;
const ENTRY_TTL_MS = 24 * 60 * 60 * 1000;

/** Opens (or creates) the progress bucket. */
export async function openProgressBoard(nc: NatsConnection, logger: Logger): Promise<ProgressBoard> {
  const kv = await new Kvm(nc).create(PROGRESS_BUCKET, { history: 1, ttl: ENTRY_TTL_MS });
  return new KvProgressBoard(kv, logger);
}

class KvProgressBoard implements ProgressBoard {
  readonly #kv: KV;
  readonly #logger: Logger;

  constructor(kv: KV, logger: Logger) {
    this.#kv = kv;
    this.#logger = logger;
  }

  begin(id: string, fn: string, attempt: number): ProgressHandle {
    const entry: ProgressEntry = { status: "running", fn, attempt, startedAt: new Date().toISOString(), updatedAt: "" };
    let written = false;
    let finished = false;
    let lastWrite = 0;
    let timer: NodeJS.Timeout | undefined;
    const write = (): void => {
      timer = undefined;
      if (finished) return;
      written = true;
      lastWrite = Date.now();
      entry.updatedAt = new Date(lastWrite).toISOString();
      this.#kv.put(id, JSON.stringify(entry)).catch((error: unknown) => {
        this.#logger.debug({ err: error, invocationId: id }, "Writing progress failed.");
      });
    };
    const schedule = (delay: number): void => {
      if (timer === undefined) timer = setTimeout(write, delay);
    };
    schedule(RUNNING_MARK_AFTER_MS);
    return {
      update(done, total) {
        entry.done = done;
        if (total !== undefined) entry.total = total;
        // The first report is written at once rather than at the running mark.
        if (!written && timer !== undefined) {
          clearTimeout(timer);
          timer = undefined;
        }
        schedule(Math.max(0, PROGRESS_WRITE_INTERVAL_MS - (Date.now() - lastWrite)));
      },
      finish: () => {
        finished = true;
        clearTimeout(timer);
        if (written) {
          this.#kv.delete(id).catch((error: unknown) => {
            this.#logger.debug({ err: error, invocationId: id }, "Removing progress failed.");
          });
        }
      },
    };
  }

  async get(id: string): Promise<ProgressEntry | undefined> {
    const entry = await this.#kv.get(id);
    if (entry?.operation !== "PUT" || entry.length === 0) return undefined;
    return entry.json<ProgressEntry>();
  }

  async *watch(id: string, signal: AbortSignal): AsyncIterable<ProgressEntry | undefined> {
    const watcher = await this.#kv.watch({ key: id });
    const stop = (): void => watcher.stop();
    signal.addEventListener("abort", stop, { once: true });
    try {
      for await (const entry of watcher) {
        yield entry.operation === "PUT" && entry.length > 0 ? entry.json<ProgressEntry>() : undefined;
      }
    } finally {
      signal.removeEventListener("abort", stop);
      watcher.stop();
    }
  }
}
