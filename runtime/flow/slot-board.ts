import type { KV, KvWatchEntry } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import type { Logger } from "pino";
import { type BucketWatch, ensureBucket, watchBucket } from "../nats/buckets";
import { type Replication, SINGLE_REPLICA } from "../nats/stream-replicas";

/**
 * Counted slots in the key-value bucket `JETFN_FLOW`, shared by every runtime: the primitive under
 * concurrency limits (a slot is a lease, renewed while its job runs) and rate limits (a slot is a
 * start, reusable once its period has passed). A group's slots are the keys `<group>.<0..limit-1>`;
 * each holds `{"until": <epoch ms>}`, the time it frees by itself. A slot is taken with a
 * compare-and-set (create, or update at the revision seen), so two runtimes never hold one slot;
 * one whose holder died frees when its time passes, without anyone deleting it. Every runtime
 * watches the bucket, so it knows which slots look free before it asks.
 *
 * A slot can be kept for one job (`{"until": <epoch ms>, "for": "<job id>"}`): a job that frees its
 * lease hands it to the waiting job it wakes, so no job arriving meanwhile takes it. Only that job's
 * take gets it; if it does not come by `until`, the slot is free for anyone.
 */
export const FLOW_BUCKET = "JETFN_FLOW";
/** Keys untouched this long leave the bucket (slots of keys no longer used). */
const BUCKET_TTL_MS = 25 * 3_600_000;
/** What a freed slot holds. */
const FREE = JSON.stringify({ until: 0 });
/** Slots tried per take before the group is judged full (the view may be a moment stale). */
const MAX_TRIES = 8;
/**
 * A group whose slots have all been free this long is forgotten (keys come from job input, so
 * fresh ones would otherwise grow the board for the life of the process). Forgetting costs the next
 * take of it two more requests: its create is refused, and the slot is read and then updated.
 */
const DEFAULT_IDLE_MS = 60_000;

/** A slot this runtime holds. */
export interface HeldSlot {
  readonly key: string;
  /** Moves its free time; false when the slot was lost (taken over after it expired). */
  extend(until: number): Promise<boolean>;
  /** Frees it now (a no-op if it was taken over); a renewal in flight is written first. */
  release(): Promise<void>;
  /**
   * Keeps it for job `holder` until `until` instead of freeing it (no more renewals): only that
   * job's take gets it. False when the slot was lost (taken over after it expired).
   */
  keepFor(holder: string, until: number): Promise<boolean>;
}

/** Who takes a slot, and how. */
export interface TakeOptions {
  /** Take it kept for this job (a slot handed to a woken job before it is sent back). */
  keepFor?: string;
  /** The job taking it, when it was woken: a slot kept for it is taken first. */
  claimant?: string;
  /** The key of the slot kept for `claimant`, as its wake said (read when this board has not heard of it). */
  kept?: string;
}

/** The slots every runtime sees. */
export interface SlotBoard {
  /** Slots of `group` (of `limit`) occupied at `now`, as far as this runtime has heard. */
  occupied(group: string, limit: number, now?: number): number;
  /** When the next slot of a full group frees by itself (epoch ms); `now` when one is free. */
  nextFree(group: string, limit: number, now?: number): number;
  /**
   * Takes a free slot until `until` (or the one kept for `options.claimant`), or answers undefined
   * when every slot is occupied.
   */
  take(group: string, limit: number, until: number, options?: TakeOptions): Promise<HeldSlot | undefined>;
  /**
   * Takes the slot of `group` kept for job `claimant` (seen on the board, or read at `kept`, the key
   * its wake named), until `until`; undefined when none is kept for it any more.
   */
  takeKept(
    group: string,
    limit: number,
    claimant: string,
    kept: string | undefined,
    until: number,
  ): Promise<HeldSlot | undefined>;
  /** Whether a slot of `group` is kept for job `holder` now, as far as this runtime has heard. */
  keptFor(group: string, holder: string, now?: number): boolean;
  /** Groups held in memory (for tests and diagnostics). */
  readonly groups: number;
  close(): Promise<void>;
}

/** Options of a slot board. */
export interface SlotBoardOptions {
  /** Forget a group whose slots have all been free this long (ms). @default 60_000 */
  idleMs?: number;
}

interface SlotEntry {
  revision: number;
  until: number;
  /** The job it is kept for, if it is. */
  holder?: string;
}

interface SlotGroup {
  readonly slots: Map<number, SlotEntry>;
  /** When the board last heard of a change in it (epoch ms). */
  touched: number;
}

/** Opens the bucket and resolves once every existing slot is known. */
export async function openSlotBoard(
  nc: NatsConnection,
  logger: Logger,
  replication: Replication = SINGLE_REPLICA,
  options: SlotBoardOptions = {},
): Promise<SlotBoard> {
  const kv = await ensureBucket(nc, FLOW_BUCKET, { ttl: BUCKET_TTL_MS }, replication);
  const board = new KvSlotBoard(kv, options.idleMs ?? DEFAULT_IDLE_MS);
  await board.start(logger);
  return board;
}

class KvSlotBoard implements SlotBoard {
  readonly #kv: KV;
  readonly #idleMs: number;
  readonly #groups = new Map<string, SlotGroup>();
  #watch: BucketWatch | undefined;
  #pruner: NodeJS.Timeout | undefined;

  constructor(kv: KV, idleMs: number) {
    this.#kv = kv;
    this.#idleMs = idleMs;
  }

  async start(logger: Logger): Promise<void> {
    this.#watch = await watchBucket(this.#kv, (entry) => this.#heard(entry), logger, "flow-control slots");
    this.#pruner = setInterval(() => this.#prune(), this.#idleMs);
    this.#pruner.unref();
  }

  get groups(): number {
    return this.#groups.size;
  }

  occupied(group: string, limit: number, now = Date.now()): number {
    let count = 0;
    for (const [index, entry] of this.#groups.get(group)?.slots ?? []) {
      if (index < limit && entry.until > now) count++;
    }
    return count;
  }

  nextFree(group: string, limit: number, now = Date.now()): number {
    const slots = this.#groups.get(group)?.slots;
    let earliest = Number.POSITIVE_INFINITY;
    for (let index = 0; index < limit; index++) {
      const until = slots?.get(index)?.until ?? 0;
      if (until <= now) return now;
      earliest = Math.min(earliest, until);
    }
    return earliest;
  }

  keptFor(group: string, holder: string, now = Date.now()): boolean {
    for (const entry of this.#groups.get(group)?.slots.values() ?? []) {
      if (entry.holder === holder && entry.until > now) return true;
    }
    return false;
  }

  async take(group: string, limit: number, until: number, options: TakeOptions = {}): Promise<HeldSlot | undefined> {
    const value = options.keepFor === undefined ? { until } : { until, for: options.keepFor };
    if (options.claimant !== undefined) {
      const kept = await this.takeKept(group, limit, options.claimant, options.kept, until);
      if (kept) return kept;
    }
    const now = Date.now();
    const slots = this.#groups.get(group)?.slots;
    const free: number[] = [];
    for (let index = 0; index < limit; index++) if ((slots?.get(index)?.until ?? 0) <= now) free.push(index);
    // Runtimes start at different free slots, so two rarely race for the same one.
    const start = Math.floor(Math.random() * free.length);
    for (let tried = 0; tried < Math.min(free.length, MAX_TRIES); tried++) {
      const index = free[(start + tried) % free.length] as number;
      const key = `${group}.${index}`;
      // Looked at again right before the claim: another job of this runtime may have taken it
      // meanwhile, and a claim at the revision it wrote would succeed over its lease.
      const seen = this.#groups.get(group)?.slots.get(index);
      if (seen && seen.until > Date.now()) continue;
      const revision = await this.#claim(key, seen, value);
      if (revision !== undefined) return this.#held(key, revision);
    }
    return undefined;
  }

  async takeKept(
    group: string,
    limit: number,
    claimant: string,
    kept: string | undefined,
    until: number,
  ): Promise<HeldSlot | undefined> {
    // The slot its wake named first: two runtimes may both have kept a slot for it, and the one
    // whose wake was a duplicate gives its slot to the next job in line.
    const named = kept?.startsWith(`${group}.`) && splitKey(kept).index < limit ? kept : undefined;
    const key = named ?? this.#keptKey(group, limit, claimant);
    if (key === undefined) return undefined;
    let entry = this.#groups.get(group)?.slots.get(splitKey(key).index);
    if (entry?.holder !== claimant) {
      // The watch may not have reported the keeping yet (written by another runtime just before it sent the job).
      const current = await this.#kv.get(key);
      if (current?.operation !== "PUT") return undefined;
      entry = { revision: current.revision, ...readSlot(current.string()) };
      this.#set(key, entry.revision, entry.until, entry.holder);
      if (entry.holder !== claimant) return undefined;
    }
    // Kept for it even if its time has passed, as long as nobody took it since: the revision says.
    const revision = await this.#claim(key, entry, { until }, true);
    return revision === undefined ? undefined : this.#held(key, revision);
  }

  /** The key of a slot of `group` kept for `holder`, as far as this runtime has heard. */
  #keptKey(group: string, limit: number, holder: string): string | undefined {
    for (const [index, entry] of this.#groups.get(group)?.slots ?? []) {
      if (index < limit && entry.holder === holder) return `${group}.${index}`;
    }
    return undefined;
  }

  async close(): Promise<void> {
    clearInterval(this.#pruner);
    this.#watch?.stop();
  }

  /**
   * Compare-and-set on one slot; the new revision, or undefined when it is taken. A refused write
   * means the board was behind (a change not heard yet, or a group it forgot): the slot is read
   * and recorded, and taken at the revision read if it turns out free.
   */
  async #claim(key: string, seen: SlotEntry | undefined, value: SlotValue, again = false): Promise<number | undefined> {
    try {
      const text = JSON.stringify(value);
      const revision = seen ? await this.#kv.update(key, text, seen.revision) : await this.#kv.create(key, text);
      this.#set(key, revision, value.until, value.for);
      return revision;
    } catch (error) {
      if (!isConflict(error)) throw error;
      const current = await this.#kv.get(key);
      if (current?.operation !== "PUT") {
        // Deleted, or aged out of the bucket: it can be created again.
        this.#forget(key, current?.revision ?? Number.POSITIVE_INFINITY);
        return again ? undefined : this.#claim(key, undefined, value, true);
      }
      const entry = { revision: current.revision, ...readSlot(current.string()) };
      this.#set(key, entry.revision, entry.until, entry.holder);
      return !again && entry.until <= Date.now() ? this.#claim(key, entry, value, true) : undefined;
    }
  }

  #held(key: string, first: number): HeldSlot {
    let revision = first;
    let released = false;
    // One write at a time, each at the revision the one before wrote: a release sent while a
    // renewal is in flight would carry the revision the renewal replaces and be refused (the slot
    // stays taken until its lease runs out), or be accepted and refuse the renewal (a false
    // "lease ran out").
    let last: Promise<unknown> = Promise.resolve();
    const inTurn = <T>(write: () => Promise<T>): Promise<T> => {
      const next = last.then(write);
      last = next.catch(() => undefined);
      return next;
    };
    return {
      key,
      extend: (until) =>
        inTurn(async () => {
          if (released) return true;
          try {
            revision = await this.#kv.update(key, JSON.stringify({ until }), revision);
            this.#set(key, revision, until);
            return true;
          } catch (error) {
            if (!isConflict(error)) throw error;
            return false;
          }
        }),
      release: () => {
        released = true;
        return inTurn(async () => {
          // Written free (until 0) rather than deleted: its revision stays known, so the next
          // claim is one update; a create over a deleted key costs nats.js three requests.
          try {
            revision = await this.#kv.update(key, FREE, revision);
            this.#set(key, revision, 0);
          } catch (error) {
            if (!isConflict(error)) throw error;
          }
        });
      },
      keepFor: (holder, until) => {
        released = true;
        return inTurn(async () => {
          try {
            revision = await this.#kv.update(key, JSON.stringify({ until, for: holder }), revision);
            this.#set(key, revision, until, holder);
            return true;
          } catch (error) {
            if (!isConflict(error)) throw error;
            return false;
          }
        });
      },
    };
  }

  /** A change the watch reported. A free slot of a group not known here is not worth keeping. */
  #heard(entry: KvWatchEntry): void {
    if (entry.operation !== "PUT") {
      this.#forget(entry.key, entry.revision);
      return;
    }
    const { until, holder } = readSlot(entry.string());
    if (until > Date.now() || this.#groups.has(splitKey(entry.key).group)) {
      this.#set(entry.key, entry.revision, until, holder);
    }
  }

  #set(key: string, revision: number, until: number, holder?: string): void {
    const { group, index } = splitKey(key);
    let known = this.#groups.get(group);
    if (!known) {
      known = { slots: new Map(), touched: 0 };
      this.#groups.set(group, known);
    }
    known.touched = Date.now();
    const slot = known.slots.get(index);
    // The watch may report our own write after we recorded it: keep the newest.
    if (!slot || slot.revision <= revision) {
      known.slots.set(index, holder === undefined ? { revision, until } : { revision, until, holder });
    }
  }

  #forget(key: string, revision: number): void {
    const { group, index } = splitKey(key);
    const known = this.#groups.get(group);
    const slot = known?.slots.get(index);
    if (!known || !slot || slot.revision > revision) return;
    known.slots.delete(index);
    if (known.slots.size === 0) this.#groups.delete(group);
  }

  /** Forgets the groups whose slots have all been free for the idle time. */
  #prune(now = Date.now()): void {
    for (const [group, known] of this.#groups) {
      if (known.touched > now - this.#idleMs) continue;
      let free = true;
      for (const slot of known.slots.values()) free &&= slot.until <= now;
      if (free) this.#groups.delete(group);
    }
  }
}

function splitKey(key: string): { group: string; index: number } {
  const dot = key.lastIndexOf(".");
  return { group: key.slice(0, dot), index: Number(key.slice(dot + 1)) };
}

/** What a slot's entry holds. */
interface SlotValue {
  until: number;
  for?: string;
}

/** A slot's free time, and the job it is kept for, if any (anything unreadable is a free slot). */
function readSlot(text: string): { until: number; holder?: string } {
  try {
    const value = JSON.parse(text) as { until?: unknown; for?: unknown };
    const until = typeof value.until === "number" ? value.until : 0;
    return typeof value.for === "string" ? { until, holder: value.for } : { until };
  } catch {
    return { until: 0 };
  }
}

/** The server refused a compare-and-set: the key is not at the revision we gave. */
function isConflict(error: unknown): boolean {
  const text = String((error as Error)?.message ?? error);
  return text.includes("wrong last sequence") || text.includes("key exists");
}
