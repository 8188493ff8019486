import type { Logger } from "pino";
import type { Sql, TransactionSql } from "postgres";
import {
  deletePublished,
  deletePublishedIds,
  lockSweepBatch,
  type OutboxLag,
  type OutboxRow,
  type RefusedRow,
  readOutboxLag,
  type SetAsideRow,
  setAsideRows,
} from "../db/outbox";
import type { KeyedEnqueue } from "../flow/enqueue-api";
import type { JetStreamPublisher } from "../nats/stream-publisher";
import type { RuntimeEmitter } from "../triggers/events";
import { createOutboxBackoff, DEFAULT_PUBLISH_ATTEMPTS, nextSweepDelay, type OutboxBackoff } from "./outbox-backoff";
import { keyedJobOf, type OutboxMessage, publishMessage } from "./outbox-message";
import { type OutboxRules, outboxRowProblem } from "./outbox-rules";

/**
 * Publishes committed outbox rows to NATS: an invocation's messages right after its commit, and
 * everything else (apps' rows, leftovers of a runtime that crashed before publishing) by sweeping.
 * Every message is published with `Nats-Msg-Id` = its row id, so a repeat after a crash between
 * publish and delete is dropped by JetStream (and job ids are fenced by their invocation record).
 * Only rows meeting the outbox rules (outbox-rules.ts) are published; the sweep moves the others,
 * and rows JetStream keeps refusing, to `jetfn.outbox_set_aside`, with one warning each. A job row
 * with a singleton or debounce key is not published as it is but enqueued through its key's claim
 * (`keyed`, the enqueue API's own `enqueueKeyed`), one such row after the other, in order; its job
 * id is the row's, so enqueueing a row again after a crash gives the same job.
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
  /** Largest message the NATS server accepts (its `max_payload`). @default 1_048_576 */
  maxPayload?: number;
  /** Sweep at least this often. @default 1_000 */
  sweepIntervalMs?: number;
  /** Rows per sweep transaction. @default 500 */
  batchSize?: number;
  /** A function's fresh rows are left this long to the runtime that committed them. @default 2_000 */
  graceMs?: number;
  /** Times JetStream may refuse a row before it is set aside. @default 4 */
  publishAttempts?: number;
  /**
   * Enqueues a job row with a singleton or debounce key through its key's claim (flow/enqueue-api.ts
   * `enqueueCommittedKeyed`). @default none: such rows wait in the outbox
   */
  keyed?: (job: KeyedEnqueue) => Promise<unknown>;
}

export const DEFAULT_SWEEP_INTERVAL_MS = 1_000;
export const DEFAULT_SWEEP_BATCH = 500;
const DEFAULT_SWEEP_GRACE_MS = 2_000;
/** Longest wait between sweeps while publishing fails as a whole. */
const MAX_SWEEP_BACKOFF_MS = 30_000;
const DEFAULT_MAX_PAYLOAD = 1_048_576;
/** Postgres channel the outbox trigger notifies when an app's rows commit. */
const NOTIFY_CHANNEL = "jetfn_outbox";

/** Starts the relay: listens for commits and sweeps in the background until close(). */
export async function startOutboxRelay(options: OutboxRelayOptions): Promise<OutboxRelay> {
  const relay = new SweepingRelay(options);
  await relay.start();
  return relay;
}

/** What one sweep did. */
interface SweepResult {
  /** Rows taken from the outbox (published, refused or failed). */
  taken: number;
  published: number;
  /** Nothing could be published and at least one publish failed for a passing reason. */
  stalled: boolean;
  setAside: SetAsideRow[];
}

/** What publishing a list of messages gave. */
interface PublishResults<M> {
  published: M[];
  /** Messages JetStream answered and refused: the same message will be refused again. */
  refused: { message: M; error: unknown }[];
  /** Keyed rows whose enqueue refused what they ask for (a reserved id, say): set aside at once. */
  rejected: { message: M; reason: string }[];
  /** Messages whose publish failed for a passing reason (no answer, no connection). */
  failed: number;
}

class SweepingRelay implements OutboxRelay {
  readonly #options: OutboxRelayOptions;
  readonly #intervalMs: number;
  readonly #batchSize: number;
  readonly #graceMs: number;
  readonly #rules: OutboxRules;
  readonly #backoff: OutboxBackoff;
  #closed = false;
  #wake: (() => void) | undefined;
  #woken = false;
  #delayMs: number;
  #loop: Promise<void> = Promise.resolve();
  #unlisten: (() => Promise<void>) | undefined;

  constructor(options: OutboxRelayOptions) {
    this.#options = options;
    this.#intervalMs = options.sweepIntervalMs ?? DEFAULT_SWEEP_INTERVAL_MS;
    this.#batchSize = options.batchSize ?? DEFAULT_SWEEP_BATCH;
    this.#graceMs = options.graceMs ?? DEFAULT_SWEEP_GRACE_MS;
    this.#rules = { maxPayload: options.maxPayload ?? DEFAULT_MAX_PAYLOAD };
    this.#backoff = createOutboxBackoff(options.publishAttempts ?? DEFAULT_PUBLISH_ATTEMPTS);
    this.#delayMs = this.#intervalMs;
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
    // The runtime built these itself, so they meet the rules; any that would not is left to the
    // sweep, which sets it aside with its reason.
    const allowed = messages.filter((message) => outboxRowProblem(message, this.#rules) === undefined);
    if (allowed.length === 0) return;
    const started = performance.now();
    const { published } = await this.#publishAll(allowed);
    if (published.length < allowed.length) {
      log.warn({ failed: allowed.length - published.length }, "Publishing after commit failed; the sweep will retry.");
    }
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
    this.#wake?.();
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

  /** Sweeps until closed: at once while batches come full, on the interval (or a wake) otherwise. */
  async #sweepLoop(): Promise<void> {
    while (!this.#closed) {
      let result: SweepResult | undefined;
      try {
        result = await this.#sweepOnce();
      } catch (error) {
        if (this.#delayMs === this.#intervalMs) {
          this.#options.logger.warn({ err: error }, "Sweeping the outbox failed; trying again with back-off.");
        }
      }
      this.#reportSetAside(result?.setAside ?? []);
      const failing = result === undefined || result.stalled;
      this.#noteFailing(failing, result);
      if (!failing && (result?.taken ?? 0) >= this.#batchSize) continue;
      await this.#idle(this.#delayMs, !failing);
    }
  }

  /** Backs off while sweeps fail as a whole, and says once when that starts and when it ends. */
  #noteFailing(failing: boolean, result: SweepResult | undefined): void {
    const wasFailing = this.#delayMs > this.#intervalMs;
    if (failing) {
      if (!wasFailing && result) {
        this.#options.logger.warn({ rows: result.taken }, "Cannot publish outbox rows; retrying with back-off.");
      }
      this.#delayMs = nextSweepDelay(this.#delayMs, this.#intervalMs, MAX_SWEEP_BACKOFF_MS);
    } else {
      if (wasFailing) this.#options.logger.info("The outbox is publishing again.");
      this.#delayMs = this.#intervalMs;
    }
  }

  /**
   * One transaction: take the sweep lock and a batch; set aside rows breaking the rules; publish
   * the rest in order; delete what was stored, and set aside rows JetStream refused too often.
   */
  async #sweepOnce(): Promise<SweepResult> {
    const started = performance.now();
    const result = await this.#options.sql.begin(async (tx) => {
      const sql = tx as unknown as Sql;
      const rows = await lockSweepBatch(sql, this.#batchSize, this.#graceMs, this.#backoff.waiting(Date.now()));
      if (!rows || rows.length === 0) return { taken: 0, published: 0, stalled: false, setAside: [] };
      const refused: RefusedRow[] = [];
      const valid = rows.filter((row) => {
        const reason = outboxRowProblem(row, this.#rules);
        if (reason) {
          // Counted here, like a refusal by JetStream: if the set-aside fails, the row waits.
          this.#backoff.refused(row.position, Date.now());
          refused.push({ position: row.position, reason });
        }
        return reason === undefined;
      });
      const outcome = await this.#publishAll(valid);
      refused.push(...this.#countRefusals(outcome.refused));
      for (const { message, reason } of outcome.rejected) {
        this.#backoff.refused(message.position, Date.now());
        refused.push({ position: message.position, reason: `its keyed enqueue was refused: ${reason}` });
      }
      await deletePublished(
        sql,
        outcome.published.map((row) => row.position),
      );
      for (const row of outcome.published) this.#backoff.forget(row.position);
      const setAside = await this.#setAside(tx, refused);
      const stalled = outcome.published.length === 0 && outcome.failed > 0;
      return { taken: rows.length, published: outcome.published.length, stalled, setAside };
    });
    if (result.published > 0) {
      const durationMs = performance.now() - started;
      this.#options.events.emit("outbox:published", { count: result.published, swept: true, durationMs });
      this.#options.logger.debug({ count: result.published }, "Outbox rows published by the sweep.");
    }
    return result;
  }

  /** Rows JetStream refused: each waits its back-off, and is set aside once refused too often. */
  #countRefusals(refusals: PublishResults<OutboxRow>["refused"]): RefusedRow[] {
    const givenUp: RefusedRow[] = [];
    for (const { message, error } of refusals) {
      const reason = (error as Error).message;
      if (this.#backoff.refused(message.position, Date.now())) {
        const times = this.#backoff.refusals(message.position);
        givenUp.push({ position: message.position, reason: `JetStream refused it ${times} times: ${reason}` });
      } else {
        this.#options.logger.debug(
          {
            messageId: message.id,
            subject: message.subject,
            refusals: this.#backoff.refusals(message.position),
            reason,
          },
          "JetStream refused an outbox row; trying it again later.",
        );
      }
    }
    return givenUp;
  }

  /**
   * Moves refused rows aside; if that fails (a missing grant), they wait out the back-off their
   * refusal in this sweep set (counted once, not again here) and the sweep goes on.
   */
  async #setAside(tx: TransactionSql, refused: RefusedRow[]): Promise<SetAsideRow[]> {
    if (refused.length === 0) return [];
    try {
      return await tx.savepoint((savepoint) => setAsideRows(savepoint as unknown as Sql, refused));
    } catch (error) {
      this.#options.logger.warn(
        { err: error, rows: refused.length },
        "Cannot set aside refused outbox rows; they stay in the outbox, unpublished.",
      );
      return [];
    }
  }

  /** One warning and one `outbox:set-aside` event per row, once its move committed. */
  #reportSetAside(rows: readonly SetAsideRow[]): void {
    for (const row of rows) {
      this.#backoff.forget(row.position);
      this.#options.logger.warn(
        {
          messageId: row.id,
          subject: row.subject,
          fn: row.function,
          invocationId: row.invocationId,
          reason: row.reason,
        },
        "Outbox row set aside, not published; see `jetfn outbox`.",
      );
      this.#options.events.emit("outbox:set-aside", {
        id: row.id,
        subject: row.subject,
        reason: row.reason,
        fn: row.function,
        invocationId: row.invocationId,
      });
    }
  }

  /**
   * Publishes in order without waiting between messages, keyed rows one after the other (see
   * #sendAll); sorts them by what JetStream and the keyed enqueues answered.
   */
  async #publishAll<M extends OutboxMessage>(messages: readonly M[]): Promise<PublishResults<M>> {
    const results = await Promise.allSettled(this.#sendAll(messages));
    const outcome: PublishResults<M> = { published: [], refused: [], rejected: [], failed: 0 };
    results.forEach((result, index) => {
      const message = messages[index] as M;
      if (result.status === "fulfilled") outcome.published.push(message);
      else if (isRowProblem(result.reason)) outcome.rejected.push({ message, reason: result.reason.message });
      else if (isRefusal(result.reason)) outcome.refused.push({ message, error: result.reason });
      else outcome.failed++;
    });
    return outcome;
  }

  /**
   * Starts every message's publish. Keyed rows go one after the other, in order (so, of two rows
   * for one singleton key, the first takes it): after one fails for a passing reason, the keyed
   * rows behind it wait for the next sweep rather than overtake it.
   */
  #sendAll(messages: readonly OutboxMessage[]): Promise<unknown>[] {
    let keyed: Promise<unknown> = Promise.resolve();
    return messages.map((message) => {
      let job: KeyedEnqueue | undefined;
      try {
        job = keyedJobOf(message);
      } catch (error) {
        return Promise.reject(error);
      }
      if (job === undefined) return publishMessage(this.#options.js, message);
      const enqueue = this.#options.keyed;
      const request = job;
      const sent = keyed.then(
        () => (enqueue ? enqueue(request) : Promise.reject(new Error("this relay cannot enqueue keyed jobs"))),
        () => Promise.reject(new Error("an earlier keyed row of this batch is not enqueued yet")),
      );
      keyed = sent.catch((error: unknown) => {
        if (!isRowProblem(error) && !isRefusal(error)) throw error;
      });
      return sent;
    });
  }

  /** Waits `delayMs`, or less when woken, unless backing off (only close() cuts a back-off short). */
  #idle(delayMs: number, wakeable: boolean): Promise<void> {
    if (this.#closed) return Promise.resolve();
    if (wakeable && this.#woken) {
      this.#woken = false;
      return Promise.resolve();
    }
    return new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.#wake = undefined;
        this.#woken = false;
        resolve();
      };
      const timer = setTimeout(done, delayMs);
      this.#wake = () => {
        if (wakeable || this.#closed) done();
      };
    });
  }
}

/**
 * True when a keyed row asks for what the enqueue API refuses too (E_INPUT_INVALID, a function name
 * no function can have, an input too large): enqueueing it again fails again. By code, as everywhere.
 */
function isRowProblem(error: unknown): error is Error {
  const { name, code } = (error ?? {}) as { name?: unknown; code?: unknown };
  return name === "JetfnError" && typeof code === "string" && ROW_PROBLEMS.has(code);
}

// E_FUNCTION_NOT_FOUND comes only for a name no function can have: a valid name not deployed yet
// (a rolling deploy) is enqueued, and its job waits in the stream for its function.
const ROW_PROBLEMS = new Set(["E_INPUT_INVALID", "E_FUNCTION_NOT_FOUND", "E_PAYLOAD_TOO_LARGE"]);

/**
 * True when JetStream (or the client, before sending) refused this very message, so sending it
 * unchanged fails again; timeouts and lost connections pass. By name: see StreamRefusedError.
 */
function isRefusal(error: unknown): boolean {
  const { name, cause } = (error ?? {}) as { name?: unknown; cause?: { name?: unknown } };
  return name === "StreamRefusedError" || name === "JetStreamApiError" || cause?.name === "InvalidArgumentError";
}
