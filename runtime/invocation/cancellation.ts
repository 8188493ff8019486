import type { KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import type { Logger } from "pino";
import { type BucketWatch, ensureBucket, watchBucket } from "../nats/buckets";
import { type Replication, SINGLE_REPLICA } from "../nats/stream-replicas";
import { JetfnError } from "../support/errors";

/**
 * Cancellation. A cancel mark per invocation id lives in the key-value bucket `JETFN_CANCELS`:
 * durable (it survives restarts of runtimes and of NATS) and seen by every runtime, which watches
 * the bucket. The watch is also the notice: a runtime running the job learns of the mark as soon
 * as it is written, and aborts the attempt (`ctx.signal` fires with E_CANCELLED, its transaction
 * rolls back). A job not started yet is ended `cancelled` when it is delivered, without running;
 * a delayed job is dropped by the mover. The Postgres record (status `cancelled`, final like
 * `succeeded`) fences out any attempt that would still finish after it.
 */
export const CANCEL_BUCKET = "JETFN_CANCELS";
/** Cancel API answered by every runtime: request `{ "id": "...", "reason"?: "..." }`. */
export const CANCEL_SUBJECT = "jetfn.api.cancel";
/**
 * How long a mark is kept: longer than a job waits in a queue in practice. The record keeps the
 * outcome after that; a delayed job is looked at at least hourly, so it meets its mark in time.
 */
const MARK_TTL_MS = 7 * 24 * 3_600_000;
/** Longest reason kept. */
export const REASON_LIMIT = 500;

/** What a cancel mark holds. */
export interface CancelMark {
  reason: string;
  at: string;
}

/** The cancel marks every runtime sees, and the attempts of this runtime that a mark aborts. */
export interface Cancellations {
  /** The error a cancelled job ends with, or undefined when `id` is not cancelled. */
  cancelled(id: string): JetfnError | undefined;
  /** Calls `abort` if `id` is cancelled while it runs; returns the function that stops watching. */
  watch(id: string, abort: (reason: JetfnError) => void): () => void;
  /** Writes the mark (every runtime hears of it at once). */
  mark(id: string, reason: string): Promise<void>;
  close(): Promise<void>;
}

/** The error of a cancelled invocation. */
export function cancelledError(id: string, mark: CancelMark): JetfnError {
  return new JetfnError("E_CANCELLED", `job ${id} was cancelled: ${mark.reason}`);
}

/** Opens the bucket and resolves once every existing mark is known. */
export async function openCancellations(
  nc: NatsConnection,
  logger: Logger,
  replication: Replication = SINGLE_REPLICA,
): Promise<Cancellations> {
  const kv = await ensureBucket(nc, CANCEL_BUCKET, { ttl: MARK_TTL_MS }, replication);
  const cancellations = new KvCancellations(kv, logger);
  await cancellations.start();
  return cancellations;
}

class KvCancellations implements Cancellations {
  readonly #kv: KV;
  readonly #logger: Logger;
  readonly #marks = new Map<string, CancelMark>();
  readonly #running = new Map<string, (reason: JetfnError) => void>();
  #watch: BucketWatch | undefined;

  constructor(kv: KV, logger: Logger) {
    this.#kv = kv;
    this.#logger = logger;
  }

  async start(): Promise<void> {
    this.#watch = await watchBucket(
      this.#kv,
      (entry) => {
        if (entry.operation === "PUT") this.#apply(entry.key, entry.json<CancelMark>());
        else this.#marks.delete(entry.key);
      },
      this.#logger,
      "cancellations",
    );
  }

  #apply(id: string, mark: CancelMark): void {
    // A watch made again replays every mark: a running job is aborted at the first only.
    const known = this.#marks.has(id);
    this.#marks.set(id, mark);
    const abort = this.#running.get(id);
    if (abort && !known) {
      this.#logger.info({ invocationId: id, reason: mark.reason }, "Cancelling a running job.");
      abort(cancelledError(id, mark));
    }
  }

  cancelled(id: string): JetfnError | undefined {
    if (this.#marks.size === 0) return undefined;
    const mark = this.#marks.get(id);
    return mark ? cancelledError(id, mark) : undefined;
  }

  watch(id: string, abort: (reason: JetfnError) => void): () => void {
    this.#running.set(id, abort);
    const already = this.cancelled(id);
    if (already) abort(already);
    return () => {
      if (this.#running.get(id) === abort) this.#running.delete(id);
    };
  }

  async mark(id: string, reason: string): Promise<void> {
    const mark: CancelMark = { reason: reason.slice(0, REASON_LIMIT), at: new Date().toISOString() };
    await this.#kv.put(id, JSON.stringify(mark));
  }

  async close(): Promise<void> {
    this.#watch?.stop();
  }
}
