import { setTimeout as sleep } from "node:timers/promises";
import type { JetStreamManager, JsMsg } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import type { Logger } from "pino";
import { headerValue } from "../nats/header-value";
import type { JetStreamPublisher } from "../nats/stream-publisher";
import { type Replication, scaleUpStreams } from "../nats/stream-replicas";
import { ID_HEADER } from "../nats/subjects";
import { untilAnswered } from "../nats/until-answered";
import type { ResolvedFunction } from "../sdk/define-function";
import { JetfnError } from "../support/errors";
import { groupFunction, limitToken, slotGroup } from "./flow-key";
import { flowLabelsOf } from "./flow-labels";
import type { ResolvedLimit } from "./flow-options";
import { LeaseHandOver, wokenClaim } from "./lease-handover";
import { FLOW_BUCKET, type HeldSlot, openSlotBoard, type SlotBoard, type TakeOptions } from "./slot-board";
import { markWaiting, openWaitingJobs, WAITING_BUCKET } from "./waiting-jobs";
import {
  createWaitingRoom,
  ensureWaitingRoom,
  KEPT_SLOT_HEADER,
  readWaitingJobs,
  type WaitingRoom,
} from "./waiting-room";
import { readWoken, WOKEN_HEADER, type WokenJob } from "./wake-tag";

/**
 * The gate a job of a function with `concurrencyLimit` or `rateLimit` passes before its handler
 * runs: it takes a slot of each limit (a lease or a start), or waits in the waiting stream. Woken
 * jobs come back through `fn.job.<name>`; a lease freed while jobs wait is kept for the one it
 * wakes (lease-handover.ts), so jobs arriving meanwhile wait behind it. Every runtime also sweeps
 * the waiting jobs of the functions it runs each second, so a slot freed by a runtime that died (its lease ran out) or by
 * time (a rate window passed) wakes them even when nobody released anything, and a group whose
 * limit was removed by a redeploy is woken whole.
 */
export interface FlowControl {
  /** What a woken job kept (attempts spent, first enqueue time), if its tag verifies. */
  woken(message: JsMsg, fn: string): (WokenJob & { id: string }) | undefined;
  /**
   * Takes the job's slots: resolves with their release when it may run, or undefined once it was
   * parked (its message acked: it comes back when a slot frees, its attempts untouched). Rejects
   * with `E_FLOW_KEY_INVALID` when a key function fails (the attempt fails), or with whatever NATS
   * answered (the caller tries again): either way, no slot stays held.
   */
  admit(fn: ResolvedFunction, input: unknown, job: GateJob, message: JsMsg): Promise<(() => void) | undefined>;
  /**
   * A woken job that will not take the lease kept for it (it ends before its gate: cancelled,
   * refused, finished before; or its function was redeployed without limits) gives that lease to
   * the next job waiting, or writes it free past the function's limit, rather than leaving it unused
   * until it runs out. Never rejects.
   */
  forgo(fn: ResolvedFunction, job: GateJob, message: JsMsg): Promise<void>;
  /**
   * Tells flow control a function was deployed (or, with `fn` undefined, removed), so its waiting
   * jobs are swept. Never rejects: an open that fails is logged, and the next job or deploy tries it again.
   */
  deployed(fn: ResolvedFunction | undefined, name: string): Promise<void>;
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
  /** Aborted when the runtime begins to stop: a deploy's wait for NATS to answer ends with it. */
  stopping?: AbortSignal;
}

/** Most jobs of one group woken per sweep when nothing limits them any more. */
const WAKE_BATCH = 1_000;
/** Tries to confirm a parked job's ack, and how long each waits for the server's answer. */
const ACK_TRIES = 4;
const ACK_TIMEOUT_MS = 5_000;

/**
 * Flow control for a runtime. The bucket and the waiting stream are opened on first need: a
 * deployed function with limits, or one whose jobs were parked (by a version that had limits, or
 * by another runtime) when this runtime first looked. An open that fails is tried again by the
 * next job that needs it, or the next deploy.
 */
export function createFlowControl(options: FlowControlOptions): FlowControl {
  return new OpenedOnDemand(options);
}

class OpenedOnDemand implements FlowControl {
  readonly #options: FlowControlOptions;
  /** Every function deployed here, limited or not (a gate opened later learns them all). */
  readonly #functions = new Map<string, ResolvedFunction>();
  #gate: Promise<Gate> | undefined;
  /** Waiting jobs per function when first looked at (only while no gate is open). */
  #parked: Promise<Map<string, number>> | undefined;
  #closed = false;
  /** Ends a deploy's asking again (nats/until-answered.ts) when flow control closes. */
  readonly #closing = new AbortController();

  constructor(options: FlowControlOptions) {
    this.#options = options;
  }

  woken(message: JsMsg, fn: string): (WokenJob & { id: string }) | undefined {
    const header = headerValue(message.headers, WOKEN_HEADER);
    if (!header) return undefined;
    const id = headerValue(message.headers, ID_HEADER) ?? "";
    const job = readWoken(this.#options.secret, fn, id, header);
    return job ? { ...job, id } : undefined;
  }

  async admit(fn: ResolvedFunction, input: unknown, job: GateJob, message: JsMsg): Promise<(() => void) | undefined> {
    return (await this.#open()).admit(fn, input, job, message);
  }

  async forgo(fn: ResolvedFunction, job: GateJob, message: JsMsg): Promise<void> {
    // Also for a function that lost its limits: nothing here waits for it (the sweep wakes that
    // limit's jobs whole), but a runtime still on the version with the limit, or the limit put
    // back, would find the slot taken until the keeping ran out. Past the limit it is written free.
    if (!headerValue(message.headers, KEPT_SLOT_HEADER)) return;
    try {
      await (await this.#open()).forgo(fn, job, message);
    } catch (error) {
      this.#options.logger.debug({ err: error, invocationId: job.id }, "Could not give up a kept lease; it runs out.");
    }
  }

  async deployed(fn: ResolvedFunction | undefined, name: string): Promise<void> {
    if (fn) this.#functions.set(name, fn);
    else this.#functions.delete(name);
    try {
      if (!this.#gate) {
        if (!fn) return;
        if (!fn.flow) {
          // Jobs parked while it had limits still wait for a sweep (after a restart, say).
          this.#parked ??= this.#untilAnswered("the waiting jobs", () =>
            readWaitingJobs(this.#options.manager, this.#options.jobStream),
          ).catch((error: unknown) => {
            this.#parked = undefined; // Read again by the next deploy.
            throw error;
          });
          if (!(await this.#parked).has(name)) return;
        }
      }
      // A deploy waits for NATS to answer; a job that finds the gate closed tries once (next job again).
      (await this.#untilAnswered("flow control's bucket and waiting stream", () => this.#open())).deployed(fn, name);
    } catch (error) {
      this.#options.logger.warn(
        { err: error, fn: name },
        "Could not open flow control; the next job or deploy tries again.",
      );
    }
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#closing.abort();
    const gate = await this.#gate?.catch(() => undefined);
    await gate?.close();
  }

  #untilAnswered<T>(what: string, request: () => Promise<T>): Promise<T> {
    // The runtime's stop too: close() comes only after the deploys under way have ended.
    const stopping = this.#options.stopping;
    const signal = stopping ? AbortSignal.any([this.#closing.signal, stopping]) : this.#closing.signal;
    return untilAnswered(what, request, { logger: this.#options.logger, signal });
  }

  #open(): Promise<Gate> {
    if (this.#closed) return Promise.reject(new JetfnError("E_SHUTTING_DOWN", "flow control is closed"));
    this.#gate ??= openGate(this.#options).then(
      (gate) => {
        for (const [name, fn] of this.#functions) gate.deployed(fn, name);
        return gate;
      },
      (error: unknown) => {
        this.#gate = undefined; // Tried again by the next caller.
        throw error;
      },
    );
    return this.#gate;
  }
}

/** Opens the slots bucket and the waiting stream. */
async function openGate(options: FlowControlOptions): Promise<Gate> {
  const stream = await ensureWaitingRoom(options.manager, options.jobStream, options.replication);
  const board = await openSlotBoard(options.nc, options.logger, options.replication);
  try {
    const room = createWaitingRoom(options.manager, options.publisher, stream, options.secret);
    const waitingJobs = await openWaitingJobs(options.nc, options.replication);
    // Made after the runtime scaled its other streams up: an R1 cluster moved to R3 scales these too.
    await scaleUpStreams(
      options.manager,
      [stream, `KV_${FLOW_BUCKET}`, `KV_${WAITING_BUCKET}`],
      options.replication,
      options.logger,
    );
    return new Gate(board, room, waitingJobs, options);
  } catch (error) {
    await board.close().catch(() => undefined); // Its watcher; the next open makes another.
    throw error;
  }
}

class Gate {
  readonly #board: SlotBoard;
  readonly #room: WaitingRoom;
  readonly #waitingJobs: KV;
  readonly #nc: NatsConnection;
  readonly #logger: Logger;
  readonly #secret: string;
  /** Every function deployed here: their waiting groups are swept, limited or not. */
  readonly #functions = new Map<string, ResolvedFunction>();
  /** Waiting jobs per group, as last seen (a release wakes only where some may wait). */
  readonly #waiting = new Map<string, number>();
  readonly #handOver: LeaseHandOver;
  readonly #timers = new Map<string, NodeJS.Timeout>();
  #sweeper: NodeJS.Timeout | undefined;
  #sweeping: Promise<void> | undefined;
  #closed = false;

  constructor(board: SlotBoard, room: WaitingRoom, waitingJobs: KV, options: FlowControlOptions) {
    this.#board = board;
    this.#room = room;
    this.#waitingJobs = waitingJobs;
    this.#nc = options.nc;
    this.#logger = options.logger;
    this.#secret = options.secret;
    this.#handOver = new LeaseHandOver(board, room, LEASE_MS, this.#waiting);
  }

  async admit(fn: ResolvedFunction, input: unknown, job: GateJob, message: JsMsg): Promise<(() => void) | undefined> {
    const limits = fn.flow?.limits ?? [];
    const claim = wokenClaim(this.#secret, fn.name, job.id, message.headers);
    const parsed = parsedInput(fn, input);
    if (!parsed) {
      // Input the schema refuses never reaches the handler (it fails E_INPUT_INVALID): no slot, no
      // key, and a lease kept for it (valid under the version that parked it) goes on.
      await this.#giveOn(fn, claim, job.id);
      return () => {};
    }
    const held: { slot: HeldSlot; limit: ResolvedLimit; group: string }[] = [];
    try {
      for (const limit of limits) {
        const group = slotGroup(fn.name, limit, limitToken(limit, parsed.data));
        const now = Date.now();
        const until = now + (limit.kind === "c" ? LEASE_MS : limit.periodMs);
        const slot = await this.#board.take(group, limit.limit, until, limit.kind === "c" ? claim : undefined);
        if (slot) {
          held.push({ slot, limit, group });
          continue;
        }
        for (const taken of held.splice(0)) this.#free(taken.slot, taken.limit.kind, taken.group);
        await this.#park(fn, limit, group, job, message);
        await this.#giveOn(fn, claim, job.id);
        return undefined;
      }
    } catch (error) {
      // A key function that threw, or NATS that did not answer: what this job took is not kept.
      for (const taken of held) this.#free(taken.slot, taken.limit.kind, taken.group);
      // The attempt fails (a NATS error is asked again, and claims its kept lease then).
      if ((error as JetfnError).code === "E_FLOW_KEY_INVALID") await this.#giveOn(fn, claim, job.id);
      throw error;
    }
    // Kept in a group it no longer takes (its key changed with a redeploy): the next of that group gets it.
    if (claim?.kept && !held.some((taken) => taken.slot.key === claim.kept)) void this.#giveOn(fn, claim, job.id);
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
      for (const taken of leases) this.#free(taken.slot, taken.limit.kind, taken.group);
    };
  }

  forgo(fn: ResolvedFunction, job: GateJob, message: JsMsg): Promise<void> {
    return this.#giveOn(fn, wokenClaim(this.#secret, fn.name, job.id, message.headers), job.id);
  }

  deployed(fn: ResolvedFunction | undefined, name: string): void {
    if (fn) this.#functions.set(name, fn);
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

  /**
   * Frees a lease (a rate slot frees by itself). While jobs of its key may wait, it is kept for the
   * oldest of them, which is woken; otherwise it is written free.
   */
  #free(slot: HeldSlot, kind: ResolvedLimit["kind"], group: string): void {
    if (kind !== "c") return;
    const freed = (this.#waiting.get(group) ?? 0) > 0 ? this.#handOver.handOver(group, slot) : slot.release();
    freed.catch((error: unknown) =>
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
        labels: flowLabelsOf(message.subject, message.headers),
      }).catch((error: unknown) =>
        this.#logger.debug({ err: error, invocationId: job.id }, "Could not note the job as waiting."),
      ),
    ]);
    await this.#confirmAck(message, fn.name, job.id);
    this.#waiting.set(group, (this.#waiting.get(group) ?? 0) + 1);
    // A slot freed between our look and the park found nobody waiting: look again.
    const at = this.#board.nextFree(group, limit.limit);
    if (at <= Date.now()) await (limit.kind === "c" ? this.#wakeWithSlots(group, limit, 1) : this.#wake(group, 1));
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

  /** Wakes up to `count` jobs of a concurrency-limited group, each with a free lease kept for it. */
  async #wakeWithSlots(group: string, limit: ResolvedLimit, count: number): Promise<void> {
    try {
      await this.#handOver.wakeWithSlots(group, limit, count);
    } catch (error) {
      this.#logger.warn({ err: error, group }, "Waking waiting jobs failed; the next sweep tries again.");
    }
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

  /**
   * Passes a lease still kept for a woken job that leaves the gate without it (cancelled, refused,
   * parked again, or admitted under another key) to the next job waiting, rather than leaving it
   * idle until its time runs out. Never rejects: a lease not passed on runs out as before.
   */
  async #giveOn(fn: ResolvedFunction, claim: TakeOptions | undefined, id: string): Promise<void> {
    if (!claim?.kept) return;
    try {
      const kept = await this.#handOver.takeKept(fn.name, claim);
      if (!kept) return;
      const limit = fn.flow?.limits.find((candidate) => candidate.kind === "c")?.limit ?? 0;
      // Past a limit lowered (or removed) by a redeploy no job can take it: passed on, it would wake
      // job after job only for each to wait again.
      if (Number(kept.slot.key.slice(kept.slot.key.lastIndexOf(".") + 1)) >= limit) await kept.slot.release();
      else this.#free(kept.slot, "c", kept.group);
    } catch (error) {
      this.#logger.debug({ err: error, invocationId: id }, "Could not pass on a kept lease; it runs out.");
    }
  }

  /**
   * Acks a parked job's original and waits for the server to confirm it: an ack lost on the way
   * would bring the original back after the ack wait, to be parked (and woken, and run) a second
   * time. An ack already done is idempotent, so one whose answer was lost is simply sent again.
   */
  async #confirmAck(message: JsMsg, fn: string, id: string): Promise<void> {
    let failure: unknown;
    try {
      await message.ackAck({ timeout: ACK_TIMEOUT_MS });
      return;
    } catch (error) {
      failure = error;
    }
    // nats.js sends an ack once per message: send it again ourselves, to its reply subject.
    const reply = (message as unknown as { reply?: string }).reply;
    for (let tries = 1; reply && tries < ACK_TRIES; tries++) {
      await sleep(250 * 2 ** tries);
      try {
        await this.#nc.request(reply, "+ACK", { timeout: ACK_TIMEOUT_MS });
        return;
      } catch (error) {
        failure = error;
      }
    }
    this.#logger.warn(
      { err: failure, fn, invocationId: id },
      "A parked job's ack was not confirmed: if its original comes back, it parks again (stored once within the duplicate window).",
    );
  }

  /**
   * Wakes, per waiting group of each function deployed here, as many jobs as it has free slots; a
   * group whose limit the function no longer has (redeployed without it) is woken whole, in batches.
   */
  async #sweep(): Promise<void> {
    let counts: Map<string, number>;
    try {
      counts = await this.#room.waiting();
    } catch (error) {
      this.#logger.warn({ err: error }, "Could not count waiting jobs.");
      return;
    }
    for (const group of this.#waiting.keys()) if (!counts.has(group)) this.#waiting.delete(group);
    for (const [group, count] of counts) {
      this.#waiting.set(group, count);
      const fn = this.#functions.get(groupFunction(group));
      if (!fn || this.#closed) continue; // The runtimes that run it sweep it.
      const limit = fn.flow?.limits.find((candidate) => group.startsWith(`${candidate.kind}.`));
      const free = limit ? limit.limit - this.#board.occupied(group, limit.limit) : WAKE_BATCH;
      if (free <= 0) continue;
      if (limit?.kind === "c") await this.#wakeWithSlots(group, limit, Math.min(free, count));
      else await this.#wake(group, Math.min(free, count));
    }
  }
}

/** The job's input as its schema makes it, or undefined when the schema refuses it (or throws). */
function parsedInput(fn: ResolvedFunction, input: unknown): { data: unknown } | undefined {
  try {
    const parsed = fn.definition.spec.input.safeParse(input);
    return parsed.success ? { data: parsed.data } : undefined;
  } catch {
    return undefined; // A refinement that throws: the handler's own parse reports it.
  }
}
