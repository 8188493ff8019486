import type { JetStreamManager } from "@nats-io/jetstream";
import { DELAYED_PREFIX } from "../invocation/job-delay";
import { FAR_PREFIX, farStreamName, findScheduledJob, type ScheduledJob } from "./delayed-jobs";

/** Delayed jobs waiting for their due time: how many, and the first ones by due time. */
export interface ScheduledJobList {
  /** Every delayed job waiting in the streams (sleeping jobs' resumptions included: counting reads no message). */
  count: number;
  /** Up to `limit` of them (the first ids when more wait), soonest due first. */
  jobs: ScheduledJob[];
}

/**
 * Lists the waiting delayed jobs. They have no database record until they run, so the streams are
 * the only place they show: one subject per job, `jetfn.delayed.<id>` in the delayed-jobs stream
 * and `jetfn.delayed-far.<id>` in its far stream (jobs due in more than two minutes), read one by one.
 */
export async function listScheduledJobs(
  manager: JetStreamManager,
  stream: string,
  limit: number,
): Promise<ScheduledJobList> {
  const [near, far] = await Promise.all([
    waitingIds(manager, stream, DELAYED_PREFIX, limit),
    waitingIds(manager, farStreamName(stream), FAR_PREFIX, limit),
  ]);
  const ids = [...new Set([...near.ids, ...far.ids])].sort();
  // A sleeping job's resumption is listed as that job, `sleeping`, from its record: read on past
  // resumptions until `limit` jobs are found.
  const jobs: ScheduledJob[] = [];
  for (let from = 0; from < ids.length && jobs.length < limit; from += limit) {
    const found = await Promise.all(ids.slice(from, from + limit).map((id) => findScheduledJob(manager, stream, id)));
    for (const job of found) if (job !== undefined && !job.resumption && jobs.length < limit) jobs.push(job);
  }
  jobs.sort((a, b) => a.runAt.localeCompare(b.runAt) || a.id.localeCompare(b.id));
  return { count: near.count + far.count, jobs };
}

async function waitingIds(
  manager: JetStreamManager,
  stream: string,
  prefix: string,
  limit: number,
): Promise<{ count: number; ids: string[] }> {
  // Without a limit only the count is wanted: no need for the server to list every subject.
  const info = await manager.streams
    .info(stream, limit > 0 ? { subjects_filter: `${prefix}>` } : undefined)
    .catch(() => undefined);
  const ids = Object.keys(info?.state.subjects ?? {}).map((subject) => subject.slice(prefix.length));
  return { count: info?.state.messages ?? 0, ids };
}
