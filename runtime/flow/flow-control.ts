import type { JetStreamManager, JsMsg } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import type { Logger } from "pino";
import type { JetStreamPublisher } from "../nats/stream-publisher";
import { type Replication, scaleUpStreams } from "../nats/stream-replicas";
import { ID_HEADER } from "../nats/subjects";
import type { ResolvedFunction } from "../sdk/define-function";
import { groupFunction, limitToken, slotGroup } from "./flow-key";
import type { ResolvedLimit } from "./flow-options";
import { FLOW_BUCKET, type HeldSlot, openSlotBoard, type SlotBoard } from "./slot-board";
import { markWaiting, openWaitingJobs, WAITING_BUCKET } from "./waiting-jobs";
import { createWaitingRoom, ensureWaitingRoom, type WaitingRoom } from "./waiting-room";
import { readWoken, WOKEN_HEADER, type WokenJob } from "./wake-tag";

/**
 * The gate a job of a function with `concurrencyLimit` or `rateLimit` passes before its handler
 * runs: it takes a slot of each limit (a lease or a start), or waits in the waiting stream. Woken
 * jobs come back through `fn.job.<name>`. Every runtime also sweeps its functions' waiting jobs
 * each second, so a slot freed by a runtime that died (its lease ran out) or by time (a rate
 * window passed) wakes them even when nobody released anything.
 */
export interface FlowControl {
  /** What a woken job kept (attempts spent, first enqueue time), if its tag verifies. */
  woken(message: JsMsg, fn: string): (WokenJob & { id: string }) | undefined;
  /**
   * Takes the job's slots: resolves with their release when it may run, or undefined once it was
   * parked (its message acked: it comes back when a slot frees, its attempts untouched).
   */
  admit(fn: ResolvedFunction, input: unknown, job: GateJob, message: JsMsg): Promise<(() => void) | undefined>;
  /** Starts or stops sweeping the waiting jobs of a deployed function. */
  deployed(fn: ResolvedFunction | undefined, name: string): void;
  close(): Promise<void>;
}

/** A job at the gate. */
export interface GateJob {
  id: string;
  attempt: number;
  enqueuedAt: string;
}

/** How long a lease lasts unless renewed: a killed runtime's slots come back within this. */
export const LEASE_MS = 15_000;
/** Renewed this often while its job runs. */
const RENEW_MS = LEASE_MS / 3;
/** How often each runtime looks for waiting jobs whose slot is free. */
export const SWEEP_MS = 1_000;

/** What the gate needs from the runtime. */
export interface FlowControlOptions {
  nc: NatsConnection;
  manager: JetStreamManager;
  publisher: JetStreamPublisher;
  jobStream: string;
  logger: Logger;
  replication: Replication;
  /** The runtimes' shared secret (the scheduler's), which signs a woken job's header. */
  secret: string;
}

/** Opens the slots bucket and the waiting stream (only when a deployed function has limits). */
export async function openFlowControl(options: FlowControlOptions): Promise<FlowControl> {
  const stream = await ensureWaitingRoom(options.manager, options.jobStream, options.replication);
  const board = await openSlotBoard(options.nc, options.logger, options.replication);
  const room = createWaitingRoom(options.manager, options.publisher, stream, options.secret);
  const waitingJobs = await openWaitingJobs(options.nc, options.replication);
  // Made after the runtime scaled its other streams up: an R1 cluster moved to R3 scales these too.
  await scaleUpStreams(
    options.manager,
    [stream, `KV_${FLOW_BUCKET}`, `KV_${WAITING_BUCKET}`],
    options.replication,
    options.logger,
  );
  return new Gate(board, room, waitingJobs, options.secret, options.logger);
}

class Gate implements FlowControl {
  readonly #board: SlotBoard;
  readonly #room: WaitingRoom;
  readonly #waitingJobs: KV;
  readonly #secret: string;
  readonly #logger: Logger;
  readonly #functions = new Map<string, ResolvedFunction>();
  /** Waiting jobs per group, as last seen (a release wakes only where some may wait). */
  readonly #waiting = new Map<string, number>();
  readonly #timers = new Map<string, NodeJS.Timeout>();
  #sweeper: NodeJS.Timeout | undefined;
  #sweeping: Promise<void> | undefined;
  #closed = false;

  constructor(board: SlotBoard, room: WaitingRoom, waitingJobs: KV, secret: string, logger: Logger) {
    this.#board = board;
    this.#room = room;
    this.#waitingJobs = waitingJobs;
    this.#secret = secret;
    this.#logger = logger;
  }

  woken(message: JsMsg, fn: string): (WokenJob & { id: string }) | undefined {
    const header = message.headers?.get(WOKEN_HEADER);
    if (!header) return undefined;
    const id = message.headers?.get(ID_HEADER) ?? "";
    const job = readWoken(this.#secret, fn, id, header);
    return job ? { ...job, id } : undefined;
  }

  async admit(fn: ResolvedFunction, input: unknown, job: GateJob, message: JsMsg): Promise<(() => void) | undefined> {
    const limits = fn.flow?.limits ?? [];
    const parsed = fn.definition.spec.input.safeParse(input);
    const value = parsed.success ? parsed.data : input;
    const held: { slot: HeldSlot; limit: ResolvedLimit; group: string }[] = [];
    for (const limit of limits) {
      const group = slotGroup(fn.name, limit, limitToken(limit, value));
      const now = Date.now();
      const slot = await this.#board.take(group, limit.limit, now + (limit.kind === "c" ? LEASE_MS : limit.periodMs));
      if (slot) {
        held.push({ slot, limit, group });
        continue;
      }
      for (const taken of held) this.#free(taken.slot, taken.limit, taken.group);
      await this.#park(fn, limit, group, job, message);
      return undefined;
    }
    const leases = held.filter((taken) => taken.limit.kind === "c");
    if (leases.length === 0) return () => {};
    const renew = setInterval(() => {
      for (const { slot } of leases) {
        slot.extend(Date.now() + LEASE_MS).then(
          (kept) => {
            if (!kept)
              this.#logger.warn(
                { fn: fn.name, invocationId: job.id, slot: slot.key },
                "A lease ran out while its job ran.",
              );
          },
          (error: unknown) =>
            this.#logger.warn({ err: error, fn: fn.name, invocationId: job.id }, "Renewing a lease failed."),
        );
      }
    }, RENEW_MS);
    renew.unref();
    let released = false;
    return () => {
      if (released) return;
      released = true;
      clearInterval(renew);
      for (const taken of leases) this.#free(taken.slot, taken.limit, taken.group);
    };
  }

  deployed(fn: ResolvedFunction | undefined, name: string): void {
    if (fn?.flow) this.#functions.set(name, fn);
    else this.#functions.delete(name);
    if (this.#functions.size > 0 && !this.#sweeper && !this.#closed) {
      this.#sweeper = setInterval(() => {
        this.#sweeping ??= this.#sweep().finally(() => {
          this.#sweeping = undefined;
        });
      }, SWEEP_MS);
      this.#sweeper.unref();
    }
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#sweeper);
    for (const timer of this.#timers.values()) clearTimeout(timer);
    await this.#sweeping;
    await this.#board.close();
  }

  /** Frees a lease (a rate slot frees by itself) and wakes one job of its key, if one may wait. */
  #free(slot: HeldSlot, limit: ResolvedLimit, group: string): void {
    if (limit.kind !== "c") return;
    slot
      .release()
      .then(() => ((this.#waiting.get(group) ?? 0) > 0 ? this.#wake(group, 1) : undefined))
      .catch((error: unknown) =>
        this.#logger.warn({ err: error, slot: slot.key }, "Freeing a lease failed; it runs out by itself."),
      );
  }

  async #park(fn: ResolvedFunction, limit: ResolvedLimit, group: string, job: GateJob, message: JsMsg): Promise<void> {
    const since = new Date().toISOString();
    const token = group.split(".")[1];
    const limitName = `${limit.kind === "c" ? "concurrency" : "rate"} limit${token === "_" ? "" : `, key ${token}`}`;
    await Promise.all([
      this.#room.park(message, group, {
        id: job.id,
        fn: fn.name,
        attemptsBefore: job.attempt - 1,
        enqueuedAt: Date.parse(job.enqueuedAt) || Date.now(),
      }),
      // For `jetfn status` only; a lost entry shows the job as pending.
      markWaiting(this.#waitingJobs, {
        id: job.id,
        fn: fn.name,
        limit: limitName,
        since,
        enqueuedAt: job.enqueuedAt,
      }).catch((error: unknown) =>
        this.#logger.debug({ err: error, invocationId: job.id }, "Could not note the job as waiting."),
      ),
    ]);
    message.ack();
    this.#waiting.set(group, (this.#waiting.get(group) ?? 0) + 1);
    // A slot freed between our look and the park found nobody waiting: look again.
    const at = this.#board.nextFree(group, limit.limit);
    if (at <= Date.now()) await this.#wake(group, 1);
    else if (limit.kind === "r") this.#wakeAt(group, limit, at);
  }

  /** For a rate limit: wakes as many jobs as slots free at `at` (one timer per group). */
  #wakeAt(group: string, limit: ResolvedLimit, at: number): void {
    if (this.#timers.has(group) || this.#closed) return;
    const timer = setTimeout(
      () => {
        this.#timers.delete(group);
        const free = limit.limit - this.#board.occupied(group, limit.limit);
        if (free > 0) void this.#wake(group, free);
      },
      Math.max(0, at - Date.now()),
    );
    timer.unref();
    this.#timers.set(group, timer);
  }

  async #wake(group: string, count: number): Promise<void> {
    try {
      const woken = await this.#room.wake(group, count);
      if (woken < count) this.#waiting.set(group, 0);
      else this.#waiting.set(group, Math.max(0, (this.#waiting.get(group) ?? 0) - woken));
    } catch (error) {
      this.#logger.warn({ err: error, group }, "Waking waiting jobs failed; the next sweep tries again.");
    }
  }

  /** Wakes, per waiting group of each function here, as many jobs as it has free slots. */
  async #sweep(): Promise<void> {
    for (const fn of this.#functions.values()) {
      let counts: Map<string, number>;
      try {
        counts = await this.#room.waiting(fn.name);
      } catch (error) {
        this.#logger.warn({ err: error, fn: fn.name }, "Could not count waiting jobs.");
        continue;
      }
      for (const group of this.#waiting.keys()) {
        if (groupFunction(group) === fn.name && !counts.has(group)) this.#waiting.delete(group);
      }
      for (const [group, count] of counts) {
        this.#waiting.set(group, count);
        const limit = fn.flow?.limits.find((candidate) => group.startsWith(`${candidate.kind}.`));
        if (!limit) continue;
        const free = limit.limit - this.#board.occupied(group, limit.limit);
        if (free > 0) await this.#wake(group, Math.min(free, count));
      }
    }
  }
}
