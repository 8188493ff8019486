import type { Logger } from "pino";
import type { Sql } from "postgres";
import {
  deletePublished,
  deletePublishedIds,
  lockSweepBatch,
  type OutboxLag,
  type OutboxRow,
  readOutboxLag,
} from "./db/outbox";
import type { RuntimeEmitter } from "./events";
import type { JetStreamPublisher } from "./nats/stream-publisher";
import { type OutboxMessage, publishMessage } from "./outbox-message";

/**
 * Publishes committed outbox rows to NATS: an invocation's messages right after its commit, and
 * everything else (apps' rows, leftovers of a runtime that crashed before publishing) by sweeping.
 * Every message is published with `Nats-Msg-Id` = its row id, so a repeat after a crash between
 * publish and delete is dropped by JetStream (and job ids are fenced by their invocation record).
 */
export interface OutboxRelay {
  /** Publishes messages whose transaction just committed, then deletes their rows. Never throws. */
  publishCommitted(messages: readonly OutboxMessage[], log: Logger): Promise<void>;
  /** Asks for a sweep now (also done on every commit notified by Postgres and every interval). */
  wake(): void;
  /** How far behind publishing is. */
  lag(): Promise<OutboxLag>;
  /** Stops sweeping; resolves when the sweep in progress has ended. */
  close(): Promise<void>;
}

/** What the relay needs from the runtime. */
export interface OutboxRelayOptions {
  sql: Sql;
  /** Publishes to JetStream and waits for the stored acknowledgement. */
  js: JetStreamPublisher;
  events: RuntimeEmitter;
  logger: Logger;
  /** Sweep at least this often. @default 1_000 */
  sweepIntervalMs?: number;
  /** Rows per sweep transaction. @default 500 */
  batchSize?: number;
  /** A function's fresh rows are left this long to the runtime that committed them. @default 2_000 */
  graceMs?: number;
}

export const DEFAULT_SWEEP_INTERVAL_MS = 1_000;
export const DEFAULT_SWEEP_BATCH = 500;
export const DEFAULT_SWEEP_GRACE_MS = 2_000;
/** Postgres channel the outbox trigger notifies when an app's rows commit. */
const NOTIFY_CHANNEL = "jetfn_outbox";

/** Starts the relay: listens for commits and sweeps in the background until close(). */
export async function startOutboxRelay(options: OutboxRelayOptions): Promise<OutboxRelay> {
  const relay = new SweepingRelay(options);
  await relay.start();
  return relay;
}

class SweepingRelay implements OutboxRelay {
  readonly #options: OutboxRelayOptions;
  readonly #intervalMs: number;
  readonly #batchSize: number;
  readonly #graceMs: number;
  #closed = false;
  #wake: (() => void) | undefined;
  #woken = false;
  #loop: Promise<void> = Promise.resolve();
  #unlisten: (() => Promise<void>) | undefined;

  constructor(options: OutboxRelayOptions) {
    this.#options = options;
    this.#intervalMs = options.sweepIntervalMs ?? DEFAULT_SWEEP_INTERVAL_MS;
    this.#batchSize = options.batchSize ?? DEFAULT_SWEEP_BATCH;
    this.#graceMs = options.graceMs ?? DEFAULT_SWEEP_GRACE_MS;
  }

  async start(): Promise<void> {
    try {
      const listening = await this.#options.sql.listen(NOTIFY_CHANNEL, () => this.wake());
      this.#unlisten = listening.unlisten;
    } catch (error) {
      this.#options.logger.warn({ err: error }, "Cannot listen for outbox commits; sweeping on the interval only.");
    }
    this.#loop = this.#sweepLoop();
  }

  async publishCommitted(messages: readonly OutboxMessage[], log: Logger): Promise<void> {
    if (messages.length === 0) return;
    const started = performance.now();
    const published = await this.#publishAll(messages, log);
    try {
      await deletePublishedIds(
        this.#options.sql,
        published.map((message) => message.id),
      );
    } catch (error) {
      // Harmless: the sweep publishes them again and JetStream drops the repeats.
      log.warn({ err: error }, "Published outbox rows could not be deleted; the sweep will take care of them.");
    }
    this.#options.events.emit("outbox:published", {
      count: published.length,
      swept: false,
      durationMs: performance.now() - started,
    });
  }

  wake(): void {
    this.#woken = true;
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }

  lag(): Promise<OutboxLag> {
    return readOutboxLag(this.#options.sql);
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.wake();
    await this.#loop;
    await this.#unlisten?.().catch(() => undefined);
  }

  async #sweepLoop(): Promise<void> {
    while (!this.#closed) {
      let full = false;
      try {
        full = (await this.#sweepOnce()) >= this.#batchSize;
      } catch (error) {
        this.#options.logger.warn({ err: error }, "Sweeping the outbox failed; trying again.");
      }
      if (!full) await this.#idle();
    }
  }

  /** One transaction: take the sweep lock, publish a batch in order, delete what was stored. */
  async #sweepOnce(): Promise<number> {
    const started = performance.now();
    const count = await this.#options.sql.begin(async (tx) => {
      const rows = await lockSweepBatch(tx as unknown as Sql, this.#batchSize, this.#graceMs);
      if (!rows || rows.length === 0) return 0;
      const published = (await this.#publishAll(rows, this.#options.logger)) as OutboxRow[];
      await deletePublished(
        tx as unknown as Sql,
        published.map((row) => row.position),
      );
      return published.length;
    });
    if (count > 0) {
      this.#options.events.emit("outbox:published", { count, swept: true, durationMs: performance.now() - started });
      this.#options.logger.debug({ count }, "Outbox rows published by the sweep.");
    }
    return count;
  }

  /** Publishes in order without waiting between messages; returns those JetStream stored. */
  async #publishAll<M extends OutboxMessage>(messages: readonly M[], log: Logger): Promise<M[]> {
    const results = await Promise.allSettled(messages.map((message) => publishMessage(this.#options.js, message)));
    const published: M[] = [];
    results.forEach((result, index) => {
      const message = messages[index] as M;
      if (result.status === "fulfilled") published.push(message);
      else log.warn({ err: result.reason, subject: message.subject, messageId: message.id }, "Publishing failed.");
    });
    return published;
  }

  #idle(): Promise<void> {
    if (this.#woken || this.#closed) {
      this.#woken = false;
      return Promise.resolve();
    }
    return new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.#wake = undefined;
        resolve();
      }, this.#intervalMs);
      this.#wake = () => {
        clearTimeout(timer);
        resolve();
      };
    }).then(() => {
      this.#woken = false;
    });
  }
}
