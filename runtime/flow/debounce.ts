import type { KV, KvEntry } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import type { Logger } from "pino";
import type { Sql } from "postgres";
import { JetfnError } from "../support/errors";
import { claimKey, compareAndSet } from "./job-keys";
import { endSuperseded } from "./superseded-record";

/**
 * Debounce: of the jobs enqueued for one function with one debounce key, only the last of a burst
 * runs, one period after it was enqueued; the earlier ones end `superseded`.
 *
 * Each debounced job is a delayed job (due one period after its enqueue, see job-delay.ts) that
 * carries its key. The claim `debounce.<fn>.<key>` in `JETFN_JOB_KEYS` names the newest job of the
 * key, by its place in the delayed-jobs stream (when the stream was created, then its sequence:
 * sequences start again at 1 in a stream created again), and whether it is still `waiting` or was
 * `moved` to its function's queue. Both sides change the claim only by compare-and-set on its revision:
 *
 * - Enqueue (`takeDebounceKey`): after storing job N, the claim goes to N unless it already names a
 *   later job. A job it replaced that was still `waiting` is superseded at once: its record says so
 *   and its delayed message is removed.
 * - Due (`admitDebouncedJob`, called by the delayed-jobs mover): job J moves only if the claim names
 *   J (or an earlier job, or nothing: a claim lost to a crash), turning it `moved`; if it names a
 *   later job, J is superseded instead.
 *
 * The claim's revision orders the two: a job moved is never also superseded, and a job superseded
 * never moves. A runtime that stops between storing a job and claiming the key leaves both jobs
 * to run (none is lost).
 */

/** What a debounce claim holds. */
interface DebounceClaim {
  id: string;
  /** Sequence of the job in the delayed-jobs stream: later jobs have higher ones. */
  seq: number;
  /**
   * When that stream was created (epoch ms): a stream created again starts its sequences at 1, so
   * this orders first. Missing in claims written before it was added: they count as older.
   */
  created?: number;
  state: "waiting" | "moved";
}

/** What debounce needs from the runtime. */
export interface DebounceDependencies {
  keys: KV;
  sql: Sql;
  nc: NatsConnection;
  /** Removes a waiting delayed job by its sequence in the delayed-jobs stream. */
  removeDelayed: (seq: number) => Promise<void>;
  /** When the delayed-jobs stream was created (epoch ms). */
  delayedStreamCreated: () => Promise<number>;
  logger: Logger;
}

/** A job taking part in debounce. */
export interface DebouncedJob {
  id: string;
  fn: string;
  key: string;
  /** Its sequence in the delayed-jobs stream. */
  seq: number;
}

/** Compare-and-set rounds before giving up (each lost round means another runtime wrote the claim). */
const CLAIM_ROUNDS = 8;

/**
 * Makes `job`, just stored, the newest of its key, and supersedes the waiting job it replaces.
 * Returns the id of the job that replaced `job` when a later one had already taken the key.
 */
export async function takeDebounceKey(deps: DebounceDependencies, job: DebouncedJob): Promise<string | undefined> {
  const name = claimKey("debounce", job.fn, job.key);
  const place = { seq: job.seq, created: await deps.delayedStreamCreated() };
  for (let round = 0; round < CLAIM_ROUNDS; round++) {
    const entry = await deps.keys.get(name);
    const current = claimOf(entry);
    if (current?.id === job.id) return undefined;
    if (current && isLater(current, place)) {
      await endSuperseded(deps.sql, deps.nc, job, current.id, job.key);
      await deps.removeDelayed(job.seq).catch(() => undefined);
      return current.id;
    }
    const claim: DebounceClaim = { id: job.id, ...place, state: "waiting" };
    if ((await compareAndSet(deps.keys, name, entry, claim)) === undefined) continue;
    if (current?.state === "waiting") {
      const replaced = { id: current.id, fn: job.fn, key: job.key, seq: current.seq };
      await endSuperseded(deps.sql, deps.nc, replaced, job.id, job.key);
      // Its sequence means nothing in a stream created since (it would name another job there).
      if (current.created === place.created) await deps.removeDelayed(current.seq).catch(() => undefined);
      deps.logger.info({ fn: job.fn, invocationId: current.id, by: job.id }, "Debounced job superseded.");
    }
    return undefined;
  }
  throw contention(job);
}

/**
 * Decides, when debounced job `job` is due, whether it moves to its function's queue (true) or was
 * superseded by a later job of its key (false: its record says so).
 */
export async function admitDebouncedJob(deps: DebounceDependencies, job: DebouncedJob): Promise<boolean> {
  const name = claimKey("debounce", job.fn, job.key);
  const place = { seq: job.seq, created: await deps.delayedStreamCreated() };
  for (let round = 0; round < CLAIM_ROUNDS; round++) {
    const entry = await deps.keys.get(name);
    const current = claimOf(entry);
    if (current && current.id !== job.id && isLater(current, place)) {
      await endSuperseded(deps.sql, deps.nc, job, current.id, job.key);
      return false;
    }
    // Moved already: a repeat delivery after a move whose ack was lost.
    if (current?.id === job.id && current.state === "moved") return true;
    const moved: DebounceClaim = { id: job.id, ...place, state: "moved" };
    if ((await compareAndSet(deps.keys, name, entry, moved)) !== undefined) return true;
  }
  throw contention(job);
}

function claimOf(entry: KvEntry | null): DebounceClaim | undefined {
  if (entry?.operation !== "PUT") return undefined;
  try {
    const claim = entry.json<DebounceClaim>();
    return typeof claim?.id === "string" && typeof claim.seq === "number" ? claim : undefined;
  } catch {
    return undefined;
  }
}

/** Whether the claim names a job stored after `place` (in a later stream, or later in the same one). */
function isLater(claim: DebounceClaim, place: { seq: number; created: number }): boolean {
  const created = claim.created ?? 0;
  return created !== place.created ? created > place.created : claim.seq > place.seq;
}

function contention(job: DebouncedJob): JetfnError {
  return new JetfnError(
    "E_UNAVAILABLE",
    `debounce key ${JSON.stringify(job.key)} of ${job.fn} is being changed by too many enqueues at once; try again`,
  );
}
