import { createBullmq } from "./contenders/bullmq";
import { createGraphileWorker } from "./contenders/graphile-worker";
import { createJetfnJobs } from "./contenders/jetfn-jobs";
import type { JobContender } from "./contenders/job-contender";
import { createNaiveJetStream } from "./contenders/naive-jetstream";
import { createPgBoss } from "./contenders/pg-boss";
import { BATCHED_ENQUEUE_METRIC, ENQUEUE_SCENARIO, type JobEntry } from "./job-scenario";
import type { Scenario } from "./model";
import { rotate } from "./stats";

const SINGLE = "enqueue, single (sequential, awaited)";
const PEERS = ["naive JetStream", "BullMQ", "graphile-worker", "pg-boss"];

const ENTRIES: JobEntry[] = [
  { name: "jetfn", create: createJetfnJobs, recordFill: false },
  { name: "naive JetStream", create: createNaiveJetStream, recordFill: false },
  {
    name: "BullMQ",
    create: createBullmq,
    recordFill: false,
    unavailable: (context) => context.services.bullmqUnavailable,
  },
  { name: "graphile-worker", create: createGraphileWorker, recordFill: false },
  { name: "pg-boss", create: createPgBoss, recordFill: false },
];

/**
 * 4. Enqueue rate. Single: one job at a time, each awaited. Batched: the queue fills of scenarios 2
 * and 3 (many in flight for NATS, bulk calls of 1,000 for the peers), recorded there.
 */
export const enqueueRateScenario: Scenario = {
  id: ENQUEUE_SCENARIO,
  title: "4. Enqueue rate",
  baselines: { [SINGLE]: PEERS, [BATCHED_ENQUEUE_METRIC]: PEERS },
  targets: [],
  async run(context) {
    const count = context.sizes.singleEnqueues;
    for (const entry of rotate(ENTRIES, context.round)) {
      const reason = entry.unavailable?.(context);
      if (reason) {
        context.skip(entry.name, reason);
        continue;
      }
      let contender: JobContender | undefined;
      try {
        contender = await entry.create(context, "noop", `enqueue-r${context.round}-${Date.now().toString(36)}`);
        const ms = await contender.enqueueSequentially(count);
        context.record({
          metric: SINGLE,
          contender: entry.name,
          unit: "jobs/s",
          better: "higher",
          value: (count * 1000) / ms,
        });
      } finally {
        await contender?.close();
      }
    }
  },
};
