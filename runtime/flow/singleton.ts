import type { KV, KvEntry } from "@nats-io/kv";
import type { Logger } from "pino";
import { FINAL_STATUSES } from "../../schema/jetfn";
import type { DatabaseClient } from "../db/client";
import { getInvocation } from "../db/invocation-store";
import type { PublishedJob } from "../nats/publish-job";
import { refusedForNow } from "../nats/stream-publisher";
import { isUnanswered } from "../nats/until-answered";
import { JetfnError } from "../support/errors";
import { publishUnconfirmed } from "./enqueue-deadline";
import { claimKey, compareAndSet } from "./job-keys";

/**
 * Singletons: at most one job per function and singleton key is queued or running. The claim
 * `singleton.<fn>.<key>` in `JETFN_JOB_KEYS` names the job holding the key; it is taken by
 * compare-and-set before the job is published, so two enqueues racing on any runtimes get one job.
 * An enqueue that finds the key held by a job that has not ended is folded into it: nothing is
 * published and the caller gets the holder's id (`existing: true`).
 *
 * The claim is not released when its job ends; the next enqueue sees that the holder ended (its
 * record is final) and takes the key over. So a runtime stopping at any point never leaves a key
 * held by a job that ended, and nothing on the job path changes.
 */

/** What a singleton claim holds. */
interface SingletonClaim {
  id: string;
  /** When the claim was taken (epoch ms). */
  at: number;
  /** The job's stream sequence, once it is stored. */
  seq?: number;
}

/** An enqueue of a singleton job: stored, or folded into the job already holding the key. */
export interface SingletonOutcome extends PublishedJob {
  /** True when the key was held: `id` is the holder's, and nothing new was enqueued. */
  existing: boolean;
}

/**
 * A claim whose job was never stored (its runtime stopped between claiming and publishing) stops
 * holding the key after this long; a publish takes far less.
 */
const PUBLISH_GRACE_MS = 30_000;
const CLAIM_ROUNDS = 8;
/** How long a failed write of a claim's sequence is retried: well within the grace period. */
const SEQUENCE_RETRY_MS = 20_000;

/**
 * Enqueues `job` unless another job holds its singleton key; `publish` stores it (`again`: asked
 * once more under the same id after JetStream did not confirm, outside the enqueue's deadline).
 */
export async function enqueueSingleton(
  keys: KV,
  database: DatabaseClient,
  job: { id: string; fn: string; key: string },
  publish: (again?: boolean) => Promise<PublishedJob>,
  logger: Logger,
  /** Whether a job has a cancel mark (see holdsKey). */
  cancelled: (id: string) => boolean,
  /** Called before the claim is written; throws to stop the enqueue there (its deadline, see enqueue-deadline.ts). */
  beforeClaim: () => void = () => undefined,
): Promise<SingletonOutcome> {
  const name = claimKey("singleton", job.fn, job.key);
  for (let round = 0; round < CLAIM_ROUNDS; round++) {
    const entry = await keys.get(name);
    const current = claimOf(entry);
    // A repeat of the holder's own enqueue (a fixed id, a client's retry): publishing again past the
    // stream's duplicate window would store a second copy, so the stored job is the answer.
    if (current?.id === job.id && current.seq !== undefined) {
      return { id: job.id, seq: current.seq, duplicate: true, existing: true };
    }
    // Taken by this call (undefined for a repeat of an enqueue whose claim has no sequence yet).
    let taken: number | undefined;
    if (current?.id !== job.id) {
      if (current && (await holdsKey(database, current, cancelled))) {
        return { id: current.id, seq: current.seq ?? 0, duplicate: true, existing: true };
      }
      beforeClaim();
      taken = await compareAndSet(keys, name, entry, { id: job.id, at: Date.now() } satisfies SingletonClaim);
      if (taken === undefined) continue;
    }
    let published: PublishedJob;
    try {
      published = await publish();
    } catch (error) {
      // Only a claim this call took: a repeat's claim is the first enqueue's, whose publish may still succeed.
      if (taken === undefined) throw error;
      if (publishUnconfirmed(error)) {
        // JetStream may have stored the job: giving the key back would let another enqueue store a
        // second. The claim stays, and learns the job's sequence from a publish under the same id.
        void confirmPublish(keys, name, job, () => publish(true), logger);
      } else {
        // Not stored: give the key back at once rather than after the grace period.
        await keys.delete(name, { previousSeq: taken }).catch(() => undefined);
      }
      throw error;
    }
    const revision = taken ?? entry?.revision;
    if (revision !== undefined) await recordSequence(keys, name, revision, job, published.seq, logger);
    return { ...published, existing: false };
  }
  throw new JetfnError(
    "E_UNAVAILABLE",
    `singleton key ${JSON.stringify(job.key)} of ${job.fn} is being claimed by too many enqueues at once; try again`,
  );
}

/**
 * Writes the stored job's sequence into its claim. Without it the claim stops holding the key after
 * the grace period while the job may still wait, so a failed write is retried (in the background
 * after the first try, so the caller is not kept waiting) until shortly before the grace ends.
 */
async function recordSequence(
  keys: KV,
  name: string,
  revision: number,
  job: { id: string; fn: string },
  seq: number,
  logger: Logger,
): Promise<void> {
  const claim = JSON.stringify({ id: job.id, at: Date.now(), seq } satisfies SingletonClaim);
  const write = async (at: number) => keys.update(name, claim, at);
  try {
    await write(revision);
    return;
  } catch (error) {
    logger.warn(
      { err: error, fn: job.fn, invocationId: job.id },
      "Could not write a singleton job's sequence into its claim; retrying.",
    );
  }
  void retrySequence(keys, name, job, write, logger).catch((error: unknown) =>
    logger.error(
      { err: error, fn: job.fn, invocationId: job.id },
      "Gave up writing a singleton job's sequence into its claim: its key frees 30 s after the claim, while the job may still wait.",
    ),
  );
}

/**
 * After a publish JetStream did not confirm: publishes the job again under its id until answered,
 * for up to SEQUENCE_RETRY_MS, and writes the sequence into the claim. Within the stream's duplicate
 * window (at least a minute, see config.ts) the answer is the stored copy's (`duplicate`), or the
 * job is stored now: either way one job holds the key, for as long as it waits. Each try first
 * renews the claim (its grace counts from then), and none is made once another enqueue took the
 * key: a publish must never land after the claim stopped holding the key for this job.
 */
async function confirmPublish(
  keys: KV,
  name: string,
  job: { id: string; fn: string },
  publishAgain: () => Promise<PublishedJob>,
  logger: Logger,
): Promise<void> {
  const deadline = Date.now() + SEQUENCE_RETRY_MS;
  let failure: unknown;
  for (let delay = 250; Date.now() < deadline; delay = Math.min(delay * 2, 2_000)) {
    let renewed: number | undefined;
    try {
      const entry = await keys.get(name);
      // Another job took the key, or a repeat of this enqueue wrote the sequence: nothing to settle.
      if (!awaitsSequence(entry, job.id)) return;
      renewed = await compareAndSet(keys, name, entry, { id: job.id, at: Date.now() } satisfies SingletonClaim);
    } catch (error) {
      // The key store did not answer: ask again until the deadline (the claim holds meanwhile).
      failure = error;
    }
    if (renewed !== undefined) {
      try {
        const { seq, duplicate } = await publishAgain();
        logger.info(
          { fn: job.fn, invocationId: job.id, seq, duplicate },
          "A singleton job's unconfirmed publish is settled: its claim holds the stored job.",
        );
        await recordSequence(keys, name, renewed, job, seq, logger);
        return;
      } catch (error) {
        failure = error;
        if (!publishUnconfirmed(error) && !refusedForNow(error) && !isUnanswered(error)) break;
      }
    }
    // A lost compare-and-set (the claim moved meanwhile) is looked at again after the same pause.
    await new Promise((resolve) => setTimeout(resolve, delay));
  }
  logger.error(
    { err: failure, fn: job.fn, invocationId: job.id },
    "Could not learn whether a singleton job's unconfirmed publish was stored: its key frees 30 s after the claim, while the job may wait.",
  );
}

/** Retries the sequence write at the claim's current revision, as long as the claim still names the job. */
async function retrySequence(
  keys: KV,
  name: string,
  job: { id: string; fn: string },
  write: (revision: number) => Promise<number>,
  logger: Logger,
): Promise<void> {
  const deadline = Date.now() + SEQUENCE_RETRY_MS;
  for (let delay = 250; ; delay = Math.min(delay * 2, 2_000)) {
    await new Promise((resolve) => setTimeout(resolve, delay));
    try {
      const entry = await keys.get(name);
      // Taken over, or written already: nothing left to do.
      if (!entry || !awaitsSequence(entry, job.id)) return;
      await write(entry.revision);
      logger.info({ fn: job.fn, invocationId: job.id }, "Wrote a singleton job's sequence into its claim.");
      return;
    } catch (error) {
      if (Date.now() > deadline) throw error;
      logger.warn(
        { err: error, fn: job.fn, invocationId: job.id },
        "Could not write a singleton job's sequence into its claim; retrying.",
      );
    }
  }
}

/**
 * Whether the claim's job still holds its key: it has not ended (or is being published right now).
 * A job with no record that was cancelled holds it no more: a cancel that does not know the job's
 * function (it waits in the queue, no runtime received it yet) writes only the mark, and the job
 * ends `cancelled` without running whenever it is delivered.
 */
async function holdsKey(
  database: DatabaseClient,
  claim: SingletonClaim,
  cancelled: (id: string) => boolean,
): Promise<boolean> {
  const record = await getInvocation(database, claim.id);
  if (record) return !FINAL_STATUSES.has(record.status);
  if (cancelled(claim.id)) return false;
  return claim.seq !== undefined || Date.now() - claim.at < PUBLISH_GRACE_MS;
}

/** Whether the claim in `entry` names job `id` and has no sequence written yet. */
function awaitsSequence(entry: KvEntry | null, id: string): boolean {
  const claim = claimOf(entry);
  return claim?.id === id && claim.seq === undefined;
}

function claimOf(entry: KvEntry | null): SingletonClaim | undefined {
  if (entry?.operation !== "PUT") return undefined;
  try {
    const claim = entry.json<SingletonClaim>();
    return typeof claim?.id === "string" && typeof claim.at === "number" ? claim : undefined;
  } catch {
    return undefined;
  }
}
