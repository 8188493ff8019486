import type { KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { ensureBucket, openBucket } from "../nats/buckets";
import { type Replication, SINGLE_REPLICA } from "../nats/stream-replicas";
import type { FlowLabels } from "./flow-labels";

/**
 * Which jobs wait for a limit, by id, for `jetfn status`: the bucket `JETFN_WAITING`, one entry
 * per parked job, written when it parks (alongside its message in the waiting stream) and never
 * read on the job path. An entry outlives its wait (nobody deletes it): status asks it only for an
 * id that no record, running entry or delayed job knows, and a job that ran has a record.
 */
export const WAITING_BUCKET = "JETFN_WAITING";
/** Entries are kept this long (a job waiting longer shows `pending` after that). */
const ENTRY_TTL_MS = 7 * 24 * 3_600_000;

/** A job waiting for a limit, as `status` shows it. */
export interface WaitingJob {
  id: string;
  fn: string;
  /** `concurrency` or `rate`, and the key's token (`_` for the function's own limit). */
  limit: string;
  /** When it parked (ISO 8601). */
  since: string;
  enqueuedAt: string;
  /** Its priority and debounce or singleton key, from its message (absent in entries of older runtimes). */
  labels?: FlowLabels;
}

/** Opens (creating) the bucket parked jobs are written to. */
export function openWaitingJobs(nc: NatsConnection, replication: Replication = SINGLE_REPLICA): Promise<KV> {
  return ensureBucket(nc, WAITING_BUCKET, { ttl: ENTRY_TTL_MS }, replication);
}

/** Records that `job` waits. */
export async function markWaiting(kv: KV, job: WaitingJob): Promise<void> {
  await kv.put(job.id, JSON.stringify(job));
}

/** Looks an id up among waiting jobs; undefined when the bucket does not exist (no limits used yet). */
export function waitingJobFinder(nc: NatsConnection): (id: string) => Promise<WaitingJob | undefined> {
  let bucket: Promise<KV | undefined> | undefined;
  return async (id) => {
    bucket ??= openBucket(nc, WAITING_BUCKET).catch(() => undefined);
    const kv = await bucket;
    if (!kv) {
      bucket = undefined; // Created later by the first function with limits: look again next time.
      return undefined;
    }
    const entry = await kv.get(id).catch(() => null);
    return entry?.operation === "PUT" ? entry.json<WaitingJob>() : undefined;
  };
}
