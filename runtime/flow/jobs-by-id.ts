import type { JetStreamManager } from "@nats-io/jetstream";
import type { DatabaseClient } from "../db/client";
import { getInvocation } from "../db/invocation-store";
import { findScheduledJob } from "../nats/delayed-jobs";
import type { UnrecordedJobFinder } from "../nats/stored-job";
import type { JobsById } from "./chosen-id";
import type { WaitingJob } from "./waiting-jobs";

/** What finding a job by id asks: the streams, the waiting jobs' bucket and the records. */
export interface JobsByIdSources {
  manager: JetStreamManager;
  delayedStream: string;
  unrecorded: UnrecordedJobFinder;
  waitingJob: (id: string) => Promise<WaitingJob | undefined>;
  database: DatabaseClient;
}

/** Where a runtime finds jobs by id, for the enqueue API's check of chosen ids. */
export function jobsById(sources: JobsByIdSources): JobsById {
  return {
    scheduled: async (id) => findScheduledJob(sources.manager, sources.delayedStream, id),
    queued: (id, fn) => sources.unrecorded.find(id, fn),
    waiting: async (id) => sources.waitingJob(id),
    recorded: async (id) => {
      const record = await getInvocation(sources.database, id);
      return record && { fn: record.function, labels: record.labels };
    },
  };
}
