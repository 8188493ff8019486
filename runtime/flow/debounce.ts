import type { KV, KvEntry } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import type { Logger } from "pino";
import type { Sql } from "postgres";
import { JetfnError } from "../support/errors";
import { claimKey, compareAndSet, MIN_DEBOUNCE_MS } from "./job-keys";
import { endSuperseded } from "./superseded-record";

/**
 * Debounce: of the jobs enqueued for one function with one debounce key, only the last of a burst
 * runs, one period after it was enqueued; the earlier ones end `superseded`.
 *
 * Each debounced job is a delayed job (due one period after its enqueue, see job-delay.ts) that
 * carries its key. The claim `debounce.<fn>.<key>` in `JETFN_JOB_KEYS` names the newest job of the
 * key, by its place in the delayed-jobs stream (when the stream was created, then its sequence:
 * sequences start again at 1 in a stream created again), when it is due, and whether it is still
 * `waiting` or was `moved` to its function's queue. Both sides change the claim only by
 * compare-and-set on its revision:
 *
 * - Enqueue (`takeDebounceKey`): after storing job N, the claim goes to N unless it already names a
 *   later job. A job it replaced that was still `waiting`, and not yet due, is superseded at once:
 *   its record says so and its delayed message is removed. One already due ended its burst: it is
 *   not superseded but `released` (the claim keeps its place, and every job up to it may move), and
 *   N starts the next burst.
 * - Due (`admitDebouncedJob`, called by the delayed-jobs mover): job J moves if the claim names J
 *   (or an earlier job, or nothing: a claim lost to a crash), turning it `moved`, or if J is
 *   released and has not ended (a superseded job's message may outlive it); if the claim names a
 *   later job, J is superseded instead.
 * - maxWait: the claim keeps when the first job of its burst was enqueued (`since`); an enqueue with
 *   a maxWait makes its job due no later than `since + maxWait` (`debounceDueTime`). Once that time
 *   has come, the next enqueue releases the latest job rather than superseding it (marking it
 *   released in the claim first if it is not due yet: enqueues closer than the least delay would
 *   otherwise each find it still waiting): the burst ends even while enqueues keep coming. All of
 *   it lives in the claim, so it holds across runtimes and restarts.
 *
 * The claim's revision orders the two: a job moved is never also superseded, and a job superseded
 * never moves. A runtime that stops between storing a job and claiming the key leaves both jobs
 * to run (none is lost).
 */

/** A place in the delayed-jobs stream: when the stream was created (epoch ms), then the sequence. */
interface Place {
  seq: number;
  /** Missing in claims written before it was added: they count as older. */
  created?: number;
}

/** What a debounce claim holds. */
interface DebounceClaim extends Place {
  id: string;
  state: "waiting" | "moved";
  /** When the job is due (epoch ms). Missing in claims written before maxWait. */
  due?: number;
  /** When the first job of the burst the job ends was enqueued (epoch ms). */
  since?: number;
  /** The latest job whose burst ended while it waited: it, and every job before it, may move. */
  released?: Place;
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

/** A debounced job just stored. */
export interface StoredDebouncedJob extends DebouncedJob {
  /** When it was enqueued (epoch ms). */
  enqueuedAt: number;
  /** When it is due (epoch ms). */
  due: number;
}

/** Compare-and-set rounds before giving up (each lost round means another runtime wrote the claim). */
const CLAIM_ROUNDS = 8;
/**
 * Least time from a debounced job's enqueue to its due time: a job due at once would skip the
 * delayed-jobs stream (see routeJob), and with it the mover's look at its key.
 */
export const MIN_DEBOUNCE_DELAY_MS = MIN_DEBOUNCE_MS;

/**
 * When a debounced job enqueued `now` is due: one period later, or, with a maxWait, no later than
 * maxWait after the first job of the burst it joins (read from the claim; a claim written at the
 * same time by another runtime may make it a little late or early, never lost).
 *
 * An enqueue that comes once that time has passed, while the burst's latest job still waits (it
 * cannot be due sooner than MIN_DEBOUNCE_DELAY_MS after its enqueue, so with enqueues closer than
 * that it is never due when the next comes), ends the burst: it marks that job `released` in the
 * claim, and its own job starts the next burst.
 */
export async function debounceDueTime(
  keys: KV,
  job: { fn: string; key: string; periodMs: number; maxWaitMs?: number },
  now: number,
): Promise<number> {
  const due = now + job.periodMs;
  if (job.maxWaitMs === undefined) return due;
  const name = claimKey("debounce", job.fn, job.key);
  for (let round = 0; round < CLAIM_ROUNDS; round++) {
    const entry = await keys.get(name);
    const current = claimOf(entry);
    if (!current || !continuesBurst(current, now) || current.since === undefined) return due;
    const deadline = current.since + job.maxWaitMs;
    if (now < deadline) return Math.max(Math.min(due, deadline), now + MIN_DEBOUNCE_DELAY_MS);
    const ended: DebounceClaim = { ...current, released: placeOf(current) };
    if ((await compareAndSet(keys, name, entry, ended)) !== undefined) return due;
  }
  // Another runtime keeps writing the claim: its enqueues see the deadline as well.
  return due;
}

/**
 * Makes `job`, just stored, the newest of its key, and supersedes the waiting job it replaces.
 * Returns the id of the job that replaced `job` when a later one had already taken the key.
 */
export async function takeDebounceKey(
  deps: DebounceDependencies,
  job: StoredDebouncedJob,
): Promise<string | undefined> {
  const name = claimKey("debounce", job.fn, job.key);
  const place = { seq: job.seq, created: await deps.delayedStreamCreated() };
  for (let round = 0; round < CLAIM_ROUNDS; round++) {
    const entry = await deps.keys.get(name);
    const current = claimOf(entry);
    if (current?.id === job.id) return undefined;
    if (current && isAfter(current, place)) {
      // A repeated enqueue (the outbox relay after a crash) of a job released since: it moves.
      if (isReleased(current, place)) return undefined;
      await endSuperseded(deps.sql, deps.nc, job, current.id, job.key);
      await deps.removeDelayed(job.seq).catch(() => undefined);
      return current.id;
    }
    const joins = current !== undefined && continuesBurst(current, Date.now());
    const claim: DebounceClaim = {
      id: job.id,
      ...place,
      state: "waiting",
      due: job.due,
      since: joins ? (current.since ?? job.enqueuedAt) : job.enqueuedAt,
      released: current?.state === "waiting" && !joins ? placeOf(current) : current?.released,
    };
    if ((await compareAndSet(deps.keys, name, entry, claim)) === undefined) continue;
    if (joins) {
      const replaced = { id: current.id, fn: job.fn, key: job.key, seq: current.seq };
      // Best effort: `job` is stored and holds the key; the mover supersedes the replaced job when due.
      try {
        await endSuperseded(deps.sql, deps.nc, replaced, job.id, job.key);
      } catch (error) {
        deps.logger.warn(
          { err: error, fn: job.fn, invocationId: current.id },
          "Replaced debounced job left to the mover.",
        );
        return undefined;
      }
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
    if (current && current.id !== job.id && isAfter(current, place)) {
      // A job superseded earlier whose delayed message outlived it (its removal failed, or its
      // runtime stopped first) is released too, but has ended: its first attempt would run.
      if (isReleased(current, place)) return !(await hasEnded(deps.sql, job.id));
      await endSuperseded(deps.sql, deps.nc, job, current.id, job.key);
      return false;
    }
    // Moved already: a repeat delivery after a move whose ack was lost.
    if (current?.id === job.id && current.state === "moved") return true;
    const moved: DebounceClaim = { id: job.id, ...place, state: "moved", released: current?.released };
    if ((await compareAndSet(deps.keys, name, entry, moved)) !== undefined) return true;
  }
  throw contention(job);
}

/** Whether job `id` has a final record (a superseded one, say). */
async function hasEnded(sql: Sql, id: string): Promise<boolean> {
  const rows = await sql`select 1 from jetfn.invocations where id = ${id} and jetfn.is_final(status)`;
  return rows.length > 0;
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

/**
 * Whether a job enqueued at `now` joins the burst of the claim's job: it still waits, not yet due,
 * and its burst was not ended by maxWait (the job itself released).
 */
function continuesBurst(claim: DebounceClaim, now: number): boolean {
  const waits = claim.state === "waiting" && (claim.due === undefined || claim.due > now);
  return waits && !isReleased(claim, placeOf(claim));
}

function placeOf(claim: DebounceClaim): Place {
  return claim.created === undefined ? { seq: claim.seq } : { seq: claim.seq, created: claim.created };
}

/** Whether `a` was stored after `b` (in a later stream, or later in the same one). */
function isAfter(a: Place, b: Place): boolean {
  const created = a.created ?? 0;
  const other = b.created ?? 0;
  return created !== other ? created > other : a.seq > b.seq;
}

/** Whether the job at `place` ended its burst before the claim's job came: it moves. */
function isReleased(claim: DebounceClaim, place: Place): boolean {
  return claim.released !== undefined && !isAfter(place, claim.released);
}

function contention(job: DebouncedJob): JetfnError {
  return new JetfnError(
    "E_UNAVAILABLE",
    `debounce key ${JSON.stringify(job.key)} of ${job.fn} is being changed by too many enqueues at once; try again`,
  );
}
