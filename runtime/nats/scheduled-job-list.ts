import type { JetStreamManager } from "@nats-io/jetstream";
import { DELAYED_PREFIX } from "../invocation/job-delay";
import { findScheduledJob, type ScheduledJob } from "./delayed-jobs";

/** Delayed jobs waiting for their due time: how many, and the first ones by due time. */
export interface ScheduledJobList {
  /** Every delayed job waiting in the stream. */
  count: number;
  /** Up to `limit` of them (the first ids when more wait), soonest due first. */
  jobs: ScheduledJob[];
}

/**
 * Lists the waiting delayed jobs. They have no database record until they run, so the stream is
 * the only place they show: one subject per job (`jetfn.delayed.<id>`), read one by one.
 */
export async function listScheduledJobs(
  manager: JetStreamManager,
  stream: string,
  limit: number,
): Promise<ScheduledJobList> {
  // Without a limit only the count is wanted: no need for the server to list every subject.
  const info = await manager.streams.info(stream, limit > 0 ? { subjects_filter: `${DELAYED_PREFIX}>` } : undefined);
  const ids = Object.keys(info.state.subjects ?? {})
    .map((subject) => subject.slice(DELAYED_PREFIX.length))
    .sort()
    .slice(0, limit);
  const found = await Promise.all(ids.map((id) => findScheduledJob(manager, stream, id)));
  const jobs = found.filter((job): job is ScheduledJob => job !== undefined);
  jobs.sort((a, b) => a.runAt.localeCompare(b.runAt) || a.id.localeCompare(b.id));
  return { count: info.state.messages, jobs };
}
