import type { Consumer, ConsumerMessages, JetStreamClient, JsMsg } from "@nats-io/jetstream";
import type { Logger } from "pino";

/** What a puller needs from the runtime. */
export interface JobPullerOptions {
  js: JetStreamClient;
  stream: string;
  consumer: string;
  fn: string;
  /** Handlers of this function that may run at once (read on every pull; the window follows it). */
  concurrency: () => number;
  /** How often held messages are marked in progress, so JetStream does not redeliver them. */
  heartbeatMs: () => number;
  /**
   * Runs one job. It calls `handlerDone(handlerMs)` once the handler has finished (saying how long it ran),
   * so the puller can fetch more while the outcome is still being recorded; the message stays kept
   * alive until `handle` settles.
   */
  handle: (message: JsMsg, handlerDone: (handlerMs?: number) => void) => Promise<void>;
  /**
   * Whether a job held this long still deserves in-progress pings. Past it, a stuck attempt loses
   * its lease and JetStream delivers the job again. @default always
   */
  keepAlive?: (heldForMs: number) => boolean;
  /** Called when the consumer cannot be reached, to create it again if it was deleted. */
  recover: () => Promise<void>;
  logger: Logger;
}

/** Pulls one function's jobs, never holding more than its window, and keeps held jobs alive. */
export interface JobPuller {
  readonly held: number;
  /** Most jobs whose handler has not finished this process holds at once (see {@link pullWindow}). */
  readonly window: number;
  start(): void;
  /** Drops pending pull requests and issues new ones (after a reconnect). */
  refresh(): void;
  /** Stops pulling; resolves when every held job has been handled. */
  stop(): Promise<void>;
}

/** Longest a busy puller's pull request waits on the server for messages. */
export const FETCH_EXPIRES_MS = 30_000;
/**
 * How often the server confirms a waiting pull request of a busy puller is still alive. A pull
 * request lives only on the consumer's leader: when that server dies, the request dies with it and
 * nothing tells the client. Two missed heartbeats end the pull and it is issued again (to the new
 * leader), so jobs resume a few seconds after a failover instead of when the request would have
 * expired.
 */
export const PULL_HEARTBEAT_MS = 1_000;
/**
 * The heartbeat of a puller that had no job for {@link BUSY_FOR_MS}. One a second for each of 500
 * idle functions cost a runtime 500 messages a second, most of its idle CPU. An idle pull request is
 * still waiting on the new leader when its consumer's leader dies
 * (test/faults/cluster.idle-failover.test.ts); the heartbeat is for a pull lost otherwise.
 */
export const IDLE_PULL_HEARTBEAT_MS = 15_000;
/**
 * Longest an idle puller's pull request waits on the server. nats.js ends a fetch once two
 * heartbeats are missed, checking once a heartbeat period: 2-3 periods after the server's last
 * message. The pull must outlive that, or a lost one is presumed alive past the end it would have
 * had: a 30 s pull with 15 s (half its life, the most the server accepts) was given up 30-45 s
 * after the last heartbeat. A minute holds the three periods, and each idle function issues its
 * pull half as often (a new pull costs both sides more than a heartbeat; 10 s heartbeats, given up
 * after 20-30 s, took back what that saved). A job that comes while a pull is lost does not wait
 * for it: the stall watch pulls again within two checks.
 */
export const IDLE_FETCH_EXPIRES_MS = 60_000;
/** How long after its last job a puller counts as busy. */
export const BUSY_FOR_MS = 60_000;
const RETRY_PULL_MS = 1_000;

/** About how much work, in handler time per slot, a puller holds ready beyond what runs. */
export const WINDOW_WORK_MS = 20;
/** The window in slots: at least two jobs per slot, at most 32 (for handlers of a millisecond or less). */
const MIN_JOBS_PER_SLOT = 2;
const MAX_JOBS_PER_SLOT = 32;
/** Weight of the newest handler time in the running average. */
const HANDLER_AVERAGE_WEIGHT = 0.05;

/**
 * Jobs a puller may hold whose handler has not finished: twice the concurrency for handlers of
 * 10 ms or more, so the next jobs are already here when a slot frees up; more for quicker ones,
 * about {@link WINDOW_WORK_MS} of work per slot, so pulls (and the writes after them) come in
 * batches instead of a few jobs at a time.
 */
export function pullWindow(concurrency: number, averageHandlerMs: number | undefined): number {
  const perSlot =
    averageHandlerMs === undefined ? MIN_JOBS_PER_SLOT : Math.ceil(WINDOW_WORK_MS / Math.max(averageHandlerMs, 0.001));
  return Math.max(1, concurrency) * Math.min(MAX_JOBS_PER_SLOT, Math.max(MIN_JOBS_PER_SLOT, perSlot));
}

/**
 * Jobs held in all, as a multiple of the window: besides those running, jobs whose handler has
 * finished but whose outcome is still being recorded (batched, or waiting for a shared COMMIT).
 * Past it a slow database slows pulling instead of piling up finished jobs in memory, and each job
 * waits less for its record (its state then dies young, before the garbage collector promotes it).
 */
export const HELD_WINDOWS = 4;

/** How many jobs to ask for now: what fits both the window of running jobs and the cap on held ones. */
export function jobsToPull(window: number, state: { outstanding: number; working: number; held: number }): number {
  return Math.min(window - state.outstanding - state.working, HELD_WINDOWS * window - state.outstanding - state.held);
}

/** Creates a puller; call start() to begin. */
export function createJobPuller(options: JobPullerOptions): JobPuller {
  return new WindowedPuller(options);
}

class WindowedPuller implements JobPuller {
  readonly #options: JobPullerOptions;
  /** Held messages, with when each was taken. */
  readonly #held = new Map<JsMsg, number>();
  readonly #batches = new Set<ConsumerMessages>();
  /** Resolves stop()'s wait once no message is held. */
  #idle: (() => void) | undefined;
  #consumer: Consumer | undefined;
  #outstanding = 0;
  /** Held messages whose handler has not finished yet: these count against the window. */
  #working = 0;
  #stopping = false;
  #wake: (() => void) | undefined;
  #loop: Promise<void> | undefined;
  #averageHandlerMs: number | undefined;
  #heartbeat: NodeJS.Timeout | undefined;
  /** When the last job came (Date.now()); none yet counts as idle. */
  #lastJobAt = Number.NEGATIVE_INFINITY;

  constructor(options: JobPullerOptions) {
    this.#options = options;
  }

  get held(): number {
    return this.#held.size;
  }

  get window(): number {
    return pullWindow(this.#options.concurrency(), this.#averageHandlerMs);
  }

  start(): void {
    this.#loop = this.#pullLoop().catch((error: unknown) => {
      this.#options.logger.error({ err: error, fn: this.#options.fn }, "Job pulling stopped unexpectedly.");
    });
    this.#scheduleHeartbeat();
  }

  refresh(): void {
    for (const batch of this.#batches) batch.stop();
  }

  async stop(): Promise<void> {
    this.#stopping = true;
    this.refresh();
    this.#notify();
    await this.#loop;
    while (this.#held.size > 0) {
      await new Promise<void>((resolve) => {
        this.#idle = resolve;
      });
    }
    clearTimeout(this.#heartbeat);
  }

  async #pullLoop(): Promise<void> {
    while (!this.#stopping) {
      const window = this.window;
      const free = jobsToPull(window, {
        outstanding: this.#outstanding,
        working: this.#working,
        held: this.#held.size,
      });
      // Pull in halves of the window when busy, so a pull request usually brings several jobs.
      const threshold = this.#outstanding === 0 && this.#working === 0 ? 1 : Math.ceil(window / 2);
      if (free < threshold) {
        await this.#changed();
        continue;
      }
      this.#outstanding += free;
      try {
        this.#consumer ??= await this.#options.js.consumers.get(this.#options.stream, this.#options.consumer);
        const busy = Date.now() - this.#lastJobAt < BUSY_FOR_MS;
        const batch = await this.#consumer.fetch({
          max_messages: free,
          expires: busy ? FETCH_EXPIRES_MS : IDLE_FETCH_EXPIRES_MS,
          idle_heartbeat: busy ? PULL_HEARTBEAT_MS : IDLE_PULL_HEARTBEAT_MS,
          // bind: without it, after a reconnect nats.js first asks each pull's consumer for its info,
          // one API request per function at once (500 for 500 functions). The runtime pulls again
          // itself (refresh), and the stall watch finds a consumer the server lost.
          bind: true,
        });
        this.#batches.add(batch);
        if (this.#stopping) batch.stop();
        void this.#receive(batch, free);
      } catch (error) {
        this.#outstanding -= free;
        await this.#recover(error);
      }
    }
  }

  async #receive(batch: ConsumerMessages, requested: number): Promise<void> {
    let received = 0;
    try {
      for await (const message of batch) {
        received++;
        this.#outstanding--;
        this.#take(message);
      }
    } catch (error) {
      this.#options.logger.warn({ err: error, fn: this.#options.fn }, "A pull request for jobs failed; pulling again.");
    } finally {
      this.#outstanding -= requested - received;
      this.#batches.delete(batch);
      this.#notify();
    }
  }

  #take(message: JsMsg): void {
    this.#lastJobAt = Date.now();
    this.#held.set(message, this.#lastJobAt);
    this.#working++;
    let working = true;
    const handlerDone = (handlerMs?: number): void => {
      if (!working) return;
      working = false;
      this.#working--;
      if (handlerMs !== undefined) {
        const average = this.#averageHandlerMs;
        this.#averageHandlerMs =
          average === undefined ? handlerMs : average + HANDLER_AVERAGE_WEIGHT * (handlerMs - average);
      }
      this.#notify();
    };
    // One promise per job for its whole handling (a catch and a finally would make two more).
    this.#options.handle(message, handlerDone).then(
      () => this.#release(message, handlerDone),
      (error: unknown) => {
        try {
          this.#options.logger.error(
            { err: error, fn: this.#options.fn, seq: message.seq },
            "A job could not be handled.",
          );
        } finally {
          this.#release(message, handlerDone);
        }
      },
    );
  }

  /** A job is handled: it no longer counts as held (nor, if it still did, as working). */
  #release(message: JsMsg, handlerDone: (handlerMs?: number) => void): void {
    handlerDone(undefined);
    this.#held.delete(message);
    if (this.#held.size === 0 && this.#idle) {
      const idle = this.#idle;
      this.#idle = undefined;
      idle();
    }
    this.#notify();
  }

  async #recover(error: unknown): Promise<void> {
    this.#consumer = undefined;
    this.#options.logger.warn(
      { err: error, fn: this.#options.fn },
      "Cannot pull jobs; checking the consumer and retrying in a second.",
    );
    await new Promise((resolve) => setTimeout(resolve, RETRY_PULL_MS));
    await this.#options.recover().catch((failure: unknown) => {
      this.#options.logger.warn({ err: failure, fn: this.#options.fn }, "Recreating the consumer failed.");
    });
  }

  #changed(): Promise<void> {
    return new Promise((resolve) => {
      this.#wake = resolve;
    });
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }

  /** Marks every held job as in progress, so a long handler keeps its lease. */
  #scheduleHeartbeat(): void {
    this.#heartbeat = setTimeout(() => {
      const now = Date.now();
      const keepAlive = this.#options.keepAlive ?? (() => true);
      for (const [message, since] of this.#held) {
        if (keepAlive(now - since)) message.working();
      }
      if (!this.#stopping || this.#held.size > 0) this.#scheduleHeartbeat();
    }, this.#options.heartbeatMs());
    this.#heartbeat.unref();
  }
}
