import { createBullmq } from "./contenders/bullmq";
import { createGraphileWorker } from "./contenders/graphile-worker";
import { createJetfnJobs } from "./contenders/jetfn-jobs";
import { createPgBoss } from "./contenders/pg-boss";
import { CPU_FIGURES } from "./cpu-use";
import { type JobEntry, runJobRound } from "./job-scenario";
import type { Scenario } from "./model";

const METRIC = "insert-one-row jobs drained";
/** Postgres CPU per insert job: what decides how many runtimes one Postgres carries. */
export const INSERT_POSTGRES_CPU = `${METRIC}: ${CPU_FIGURES.postgres}`;
/** This process's CPU per insert job: the runtime's own path from pull to ack, or a peer's worker. */
const INSERT_NODE_CPU = `${METRIC}: ${CPU_FIGURES.node}`;

const BARE_PEERS = ["graphile-worker", "pg-boss", "BullMQ"];
/** The peers with what their users add by hand for jetfn's guarantees (contenders/peer-guarantees.ts). */
const GUARANTEED_PEERS = BARE_PEERS.map((name) => `${name} + guarantees`);

const bullmqUnavailable: JobEntry["unavailable"] = (context) => context.services.bullmqUnavailable;
const guarantees = { guarantees: true };

const ENTRIES: JobEntry[] = [
  { name: "jetfn", create: createJetfnJobs, recordFill: false },
  { name: "graphile-worker", create: createGraphileWorker, recordFill: true },
  { name: "pg-boss", create: createPgBoss, recordFill: true },
  { name: "BullMQ", create: createBullmq, recordFill: false, unavailable: bullmqUnavailable },
  { name: "graphile-worker + guarantees", create: createGraphileWorker, recordFill: false, options: guarantees },
  { name: "pg-boss + guarantees", create: createPgBoss, recordFill: false, options: guarantees },
  {
    name: "BullMQ + guarantees",
    create: createBullmq,
    recordFill: false,
    options: guarantees,
    unavailable: bullmqUnavailable,
  },
];

/**
 * 3. Fire-and-forget jobs inserting one row each: audited and recorded exactly once for jetfn; the
 * peers bare, and with the same guarantees added by hand.
 */
export const insertJobsScenario: Scenario = {
  id: "insert-jobs",
  title: "3. Fire-and-forget, one (audited) row per job",
  baselines: {
    [METRIC]: [...BARE_PEERS, ...GUARANTEED_PEERS],
    [INSERT_POSTGRES_CPU]: ["graphile-worker"],
    [INSERT_NODE_CPU]: ["graphile-worker"],
  },
  targets: [
    {
      scenario: "insert-jobs",
      metric: METRIC,
      contender: "jetfn",
      kind: "best-peer",
      baselines: BARE_PEERS,
      min: 1,
      reason: "audited and effectively once, a job should still keep up with the fastest peer that does neither",
    },
    {
      scenario: "insert-jobs",
      metric: INSERT_NODE_CPU,
      contender: "jetfn",
      kind: "ratio",
      baselines: ["graphile-worker"],
      max: 1,
      reason: "the runtime's path from pull to ack should cost no more than a Postgres queue's worker spends on a job",
    },
    {
      scenario: "insert-jobs",
      metric: METRIC,
      contender: "jetfn",
      kind: "best-peer",
      baselines: GUARANTEED_PEERS,
      min: 2,
      reason:
        "the same guarantees added by hand cost each peer a transaction, a stamp and an effects row per job; built in and grouped, they should cost jetfn half as much",
    },
    {
      scenario: "insert-jobs",
      metric: INSERT_POSTGRES_CPU,
      contender: "jetfn",
      kind: "ratio",
      baselines: ["graphile-worker"],
      max: 0.7,
      reason:
        "with many runtimes on one Postgres, its CPU per job sets the ceiling; graphile-worker keeps its queue in Postgres, jetfn keeps it in NATS and should show it",
    },
  ],
  run: (context) => runJobRound(context, "insert", context.sizes.insertJobs, METRIC, ENTRIES),
};
