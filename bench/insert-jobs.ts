import { createBullmq } from "./contenders/bullmq";
import { createGraphileWorker } from "./contenders/graphile-worker";
import { createJetfnJobs } from "./contenders/jetfn-jobs";
import { createPgBoss } from "./contenders/pg-boss";
import { type JobEntry, runJobRound } from "./job-scenario";
import type { Scenario } from "./model";

const METRIC = "insert-one-row jobs drained";

const ENTRIES: JobEntry[] = [
  { name: "jetfn", create: createJetfnJobs, recordFill: false },
  { name: "graphile-worker", create: createGraphileWorker, recordFill: true },
  { name: "pg-boss", create: createPgBoss, recordFill: true },
  {
    name: "BullMQ",
    create: createBullmq,
    recordFill: false,
    unavailable: (context) => context.services.bullmqUnavailable,
  },
];

/** 3. Fire-and-forget jobs inserting one row each: audited and recorded exactly once for jetfn. */
export const insertJobsScenario: Scenario = {
  id: "insert-jobs",
  title: "3. Fire-and-forget, one (audited) row per job",
  baselines: { [METRIC]: ["graphile-worker", "pg-boss", "BullMQ"] },
  targets: [
    {
      scenario: "insert-jobs",
      metric: METRIC,
      contender: "jetfn",
      kind: "best-peer",
      baselines: ["graphile-worker", "pg-boss", "BullMQ"],
      min: 2,
      reason: "the peers' database-writing jobs are held by round trips per job; grouped commits should double them",
    },
  ],
  run: (context) => runJobRound(context, "insert", context.sizes.insertJobs, METRIC, ENTRIES),
};
