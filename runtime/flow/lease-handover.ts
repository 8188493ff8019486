import type { MsgHdrs } from "@nats-io/transport-node";
import { headerValue } from "../nats/header-value";
import { groupFunction } from "./flow-key";
import type { ResolvedLimit } from "./flow-options";
import type { HeldSlot, SlotBoard, TakeOptions } from "./slot-board";
import { KEPT_SLOT_HEADER, type WaitingMessage, type WaitingRoom } from "./waiting-room";
import { readWoken, WOKEN_HEADER } from "./wake-tag";

/**
 * A woken job's claim to the lease kept for it (its id, and the slot its copy names). Only a wake
 * a runtime signed counts: anyone may publish a job with another job's id.
 */
export function wokenClaim(
  secret: string,
  fn: string,
  id: string,
  headers: MsgHdrs | undefined,
): TakeOptions | undefined {
  const header = headerValue(headers, WOKEN_HEADER);
  if (!header || !readWoken(secret, fn, id, header)) return undefined;
  return { claimant: id, kept: headerValue(headers, KEPT_SLOT_HEADER) };
}

/**
 * Hands concurrency leases to waiting jobs. A lease freed while jobs of its key wait is not written
 * free: it is kept for the oldest of them (`{"until", "for": <job id>}`, by compare-and-set at its
 * revision) and that job is sent back naming the slot, so no job arriving meanwhile takes it and
 * jobs of a key start in the order they parked. A wake that finds a slot free (the sweep, a
 * parking runtime's second look) takes it kept for the job it wakes the same way. When two
 * runtimes wake the same job, the second publish is a duplicate: that runtime keeps its slot for
 * the next job in line instead.
 */
export class LeaseHandOver {
  readonly #board: SlotBoard;
  readonly #room: WaitingRoom;
  readonly #keepMs: number;
  /** The gate's count of waiting jobs per group: lowered as jobs are sent, zeroed when a line is empty. */
  readonly #waiting: Map<string, number>;

  constructor(board: SlotBoard, room: WaitingRoom, keepMs: number, waiting: Map<string, number>) {
    this.#board = board;
    this.#room = room;
    this.#keepMs = keepMs;
    this.#waiting = waiting;
  }

  /** Keeps a lease being freed for the oldest job waiting for it, and wakes that job; frees it if none waits. */
  async handOver(group: string, slot: HeldSlot): Promise<void> {
    let next: WaitingMessage | undefined;
    try {
      next = await this.#nextUnkept(group, 1);
    } catch (error) {
      await slot.release();
      throw error;
    }
    if (!next) return slot.release();
    if (await slot.keepFor(next.id, Date.now() + this.#keepMs)) await this.#sendKept(group, slot, next);
  }

  /**
   * Takes the lease kept for a woken job that will not use it (it ended before its gate), so it can
   * be handed on; undefined when none is kept for it.
   */
  async takeKept(fn: string, claim: TakeOptions): Promise<{ slot: HeldSlot; group: string } | undefined> {
    const { claimant, kept } = claim;
    if (!claimant || !kept) return undefined;
    const group = kept.slice(0, kept.lastIndexOf("."));
    // The header is a hint: only a concurrency group of this function is looked at.
    if (!group.startsWith("c.") || groupFunction(group) !== fn) return undefined;
    const slot = await this.#board.takeKept(group, Number.MAX_SAFE_INTEGER, claimant, kept, Date.now() + this.#keepMs);
    return slot && { slot, group };
  }

  /**
   * Wakes up to `count` jobs of a group, each with a free lease kept for it (taken before it is
   * sent, so a wake never sends a job to find its slot gone).
   */
  async wakeWithSlots(group: string, limit: ResolvedLimit, count: number): Promise<void> {
    let cursor = 1;
    for (let woken = 0; woken < count; woken++) {
      const next = await this.#nextUnkept(group, cursor);
      if (!next) return;
      const slot = await this.#board.take(group, limit.limit, Date.now() + this.#keepMs, { keepFor: next.id });
      if (!slot) return;
      const after = await this.#sendKept(group, slot, next);
      if (after === undefined) return;
      cursor = after;
    }
  }

  /** The oldest job of `group` from waiting-stream sequence `from` on that no lease is kept for yet. */
  async #nextUnkept(group: string, from: number): Promise<WaitingMessage | undefined> {
    for (let cursor = from; ; ) {
      const next = await this.#room.next(group, cursor);
      if (!next) {
        this.#waiting.set(group, 0);
        return undefined;
      }
      // Woken already by another runtime, which kept a lease for it.
      if (!this.#board.keptFor(group, next.id)) return next;
      cursor = next.seq + 1;
    }
  }

  /**
   * Sends `job` back with `slot` kept for it. When another runtime's wake of it was stored first,
   * the slot is kept for the next in line instead (and so on); freed when the line is empty. The
   * waiting-stream sequence after the job that went, or undefined when none did.
   */
  async #sendKept(group: string, slot: HeldSlot, job: WaitingMessage): Promise<number | undefined> {
    try {
      for (let next: WaitingMessage | undefined = job; next; ) {
        if (await this.#room.send(next, slot.key)) {
          this.#waiting.set(group, Math.max(0, (this.#waiting.get(group) ?? 0) - 1));
          return next.seq + 1;
        }
        next = await this.#nextUnkept(group, next.seq + 1);
        // Lost (its time passed and another job took it): the sweep wakes the next one.
        if (next && !(await slot.keepFor(next.id, Date.now() + this.#keepMs))) return undefined;
      }
    } catch (error) {
      // Kept for a job that may not come: freed, so the sweep or a later job can use it.
      await slot.release().catch(() => undefined);
      throw error;
    }
    await slot.release();
    return undefined;
  }
}
