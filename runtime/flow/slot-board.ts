import type { KV } from "@nats-io/kv";
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
 */
export const FLOW_BUCKET = "JETFN_FLOW";
/** Keys untouched this long leave the bucket (slots of keys no longer used). */
const BUCKET_TTL_MS = 25 * 3_600_000;
/** What a freed slot holds. */
const FREE = JSON.stringify({ until: 0 });
/** Slots tried per take before the group is judged full (the view may be a moment stale). */
const MAX_TRIES = 8;

/** A slot this runtime holds. */
export interface HeldSlot {
  readonly key: string;
  /** Moves its free time; false when the slot was lost (taken over after it expired). */
  extend(until: number): Promise<boolean>;
  /** Frees it now (a no-op if it was taken over). */
  release(): Promise<void>;
}

/** The slots every runtime sees. */
export interface SlotBoard {
  /** Slots of `group` (of `limit`) occupied at `now`, as far as this runtime has heard. */
  occupied(group: string, limit: number, now?: number): number;
  /** When the next slot of a full group frees by itself (epoch ms); `now` when one is free. */
  nextFree(group: string, limit: number, now?: number): number;
  /** Takes a free slot until `until`, or answers undefined when every slot is occupied. */
  take(group: string, limit: number, until: number, now?: number): Promise<HeldSlot | undefined>;
  close(): Promise<void>;
}

interface SlotEntry {
  revision: number;
  until: number;
}

/** Opens the bucket and resolves once every existing slot is known. */
export async function openSlotBoard(
  nc: NatsConnection,
  logger: Logger,
  replication: Replication = SINGLE_REPLICA,
): Promise<SlotBoard> {
  const kv = await ensureBucket(nc, FLOW_BUCKET, { ttl: BUCKET_TTL_MS }, replication);
  const board = new KvSlotBoard(kv, logger);
  await board.start();
  return board;
}

class KvSlotBoard implements SlotBoard {
  readonly #kv: KV;
  readonly #logger: Logger;
  readonly #groups = new Map<string, Map<number, SlotEntry>>();
  #watch: BucketWatch | undefined;

  constructor(kv: KV, logger: Logger) {
    this.#kv = kv;
    this.#logger = logger;
  }

  async start(): Promise<void> {
    this.#watch = await watchBucket(
      this.#kv,
      (entry) => {
        if (entry.operation === "PUT") this.#set(entry.key, entry.revision, readUntil(entry.string()));
        else this.#forget(entry.key, entry.revision);
      },
      this.#logger,
      "flow-control slots",
    );
  }

  occupied(group: string, limit: number, now = Date.now()): number {
    let count = 0;
    for (const [index, entry] of this.#groups.get(group) ?? []) if (index < limit && entry.until > now) count++;
    return count;
  }

  nextFree(group: string, limit: number, now = Date.now()): number {
    const slots = this.#groups.get(group);
    let earliest = Number.POSITIVE_INFINITY;
    for (let index = 0; index < limit; index++) {
      const until = slots?.get(index)?.until ?? 0;
      if (until <= now) return now;
      earliest = Math.min(earliest, until);
    }
    return earliest;
  }

  async take(group: string, limit: number, until: number, now = Date.now()): Promise<HeldSlot | undefined> {
    const slots = this.#groups.get(group);
    const free: number[] = [];
    for (let index = 0; index < limit; index++) if ((slots?.get(index)?.until ?? 0) <= now) free.push(index);
    // Runtimes start at different free slots, so two rarely race for the same one.
    const start = Math.floor(Math.random() * free.length);
    for (let tried = 0; tried < Math.min(free.length, MAX_TRIES); tried++) {
      const index = free[(start + tried) % free.length] as number;
      const key = `${group}.${index}`;
      // Looked at again right before the claim: another job of this runtime may have taken it
      // meanwhile, and a claim at the revision it wrote would succeed over its lease.
      const seen = this.#groups.get(group)?.get(index);
      if (seen && seen.until > Date.now()) continue;
      const revision = await this.#claim(key, seen, until);
      if (revision !== undefined) return this.#held(key, revision);
    }
    return undefined;
  }

  async close(): Promise<void> {
    this.#watch?.stop();
  }

  /** Compare-and-set on one slot; the new revision, or undefined when another runtime got there first. */
  async #claim(key: string, seen: SlotEntry | undefined, until: number): Promise<number | undefined> {
    const value = JSON.stringify({ until });
    try {
      const revision = seen ? await this.#kv.update(key, value, seen.revision) : await this.#kv.create(key, value);
      this.#set(key, revision, until);
      return revision;
    } catch (error) {
      if (!isConflict(error)) throw error;
      // Aged out of the bucket since we saw it: it can be created again.
      if (seen && (await this.#kv.get(key))?.operation !== "PUT") return this.#claim(key, undefined, until);
      return undefined;
    }
  }

  #held(key: string, first: number): HeldSlot {
    let revision = first;
    return {
      key,
      extend: async (until) => {
        try {
          revision = await this.#kv.update(key, JSON.stringify({ until }), revision);
          this.#set(key, revision, until);
          return true;
        } catch (error) {
          if (!isConflict(error)) throw error;
          return false;
        }
      },
      release: async () => {
        // Written free (until 0) rather than deleted: its revision stays known, so the next claim
        // is one update; a create over a deleted key costs nats.js three requests.
        try {
          this.#set(key, await this.#kv.update(key, FREE, revision), 0);
        } catch (error) {
          if (!isConflict(error)) throw error;
        }
      },
    };
  }

  #set(key: string, revision: number, until: number): void {
    const { group, index } = splitKey(key);
    let slots = this.#groups.get(group);
    if (!slots) {
      slots = new Map();
      this.#groups.set(group, slots);
    }
    const known = slots.get(index);
    // The watch may report our own write after we recorded it: keep the newest.
    if (!known || known.revision <= revision) slots.set(index, { revision, until });
  }

  #forget(key: string, revision: number): void {
    const { group, index } = splitKey(key);
    const slots = this.#groups.get(group);
    const known = slots?.get(index);
    if (!slots || !known || known.revision > revision) return;
    slots.delete(index);
    if (slots.size === 0) this.#groups.delete(group);
  }
}

function splitKey(key: string): { group: string; index: number } {
  const dot = key.lastIndexOf(".");
  return { group: key.slice(0, dot), index: Number(key.slice(dot + 1)) };
}

function readUntil(text: string): number {
  try {
    const until = (JSON.parse(text) as { until?: unknown }).until;
    return typeof until === "number" ? until : 0;
  } catch {
    return 0;
  }
}

/** The server refused a compare-and-set: the key is not at the revision we gave. */
function isConflict(error: unknown): boolean {
  const text = String((error as Error)?.message ?? error);
  return text.includes("wrong last sequence") || text.includes("key exists");
}
