import { createBullmq } from "./contenders/bullmq";
import { createJetfnJobs } from "./contenders/jetfn-jobs";
import { createNaiveJetStream } from "./contenders/naive-jetstream";
import { CPU_FIGURES } from "./cpu-use";
import { INSERT_POSTGRES_CPU } from "./insert-jobs";
import { type JobEntry, runJobRound } from "./job-scenario";
import type { Scenario } from "./model";

const METRIC = "no-op jobs drained";
const POSTGRES_CPU = `${METRIC}: ${CPU_FIGURES.postgres}`;

const ENTRIES: JobEntry[] = [
  { name: "jetfn", create: createJetfnJobs, recordFill: true },
  { name: "naive JetStream", create: createNaiveJetStream, recordFill: true },
  {
    name: "BullMQ",
    create: createBullmq,
    recordFill: true,
    unavailable: (context) => context.services.bullmqUnavailable,
  },
];

/** 2. Fire-and-forget no-op jobs, drained with their outcome recorded (jetfn) or just acked (peers). */
export const noopJobsScenario: Scenario = {
  id: "noop-jobs",
  title: "2. Fire-and-forget, no-op jobs",
  baselines: { [METRIC]: ["naive JetStream", "BullMQ"] },
  targets: [
    {
      scenario: "noop-jobs",
      metric: METRIC,
      contender: "jetfn",
      kind: "ratio",
      baselines: ["BullMQ"],
      min: 1.5,
      everyRound: true,
      reason: "clearly faster than the most used job queue, on the same jobs and machine, every time",
    },
    {
      scenario: "noop-jobs",
      metric: POSTGRES_CPU,
      contender: "jetfn",
      kind: "ratio",
      baselines: ["graphile-worker"],
      baselineScenario: "insert-jobs",
      baselineMetric: INSERT_POSTGRES_CPU,
      max: 0.25,
      reason:
        "a no-op job costs Postgres only its invocation record, the queue's work stays in NATS: a small share of what a Postgres-backed queue's simplest job costs it",
    },
  ],
  run: (context) => runJobRound(context, "noop", context.sizes.noopJobs, METRIC, ENTRIES),
};
