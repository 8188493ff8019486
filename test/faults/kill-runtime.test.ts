import { describe, expect, it } from "vitest";
import {
  countApplied,
  countRedelivered,
  enqueueAcknowledged,
  report,
  scale,
  useFaultCluster,
  waitForSucceeded,
} from "./support/fault-cluster";

// kill -9 of one of two `jetfn start` processes while they work through jobs that each write one
// row; the killed one is started again. Every acknowledged enqueue must be applied exactly once.
const JOBS = scale(10_000, 1_000);

const cluster = useFaultCluster();

describe("kill -9 of a runtime mid-run", () => {
  it(
    `applies each of ${JOBS} acknowledged jobs exactly once`,
    async () => {
      const started = Date.now();
      const { ids, retried } = await enqueueAcknowledged(cluster().js, "fault-insert", JOBS, (n) => ({ n }));
      // Let both runtimes get going, then kill one while it holds jobs (some committed, not yet acked).
      await waitForSucceeded(cluster().env, Math.floor(JOBS / 4), 120_000);
      const killedPid = cluster().runtimes[0]?.child.pid;
      await cluster().killAndRestart(0);
      const succeeded = await waitForSucceeded(cluster().env, JOBS, scale(600_000, 150_000));
      const counts = await countApplied(cluster().env, ids);
      report("kill-9", {
        enqueued: ids.length,
        publishRetries: retried,
        killedPid,
        ...counts,
        redelivered: await countRedelivered(cluster().env),
        durationMs: Date.now() - started,
      });
      expect(succeeded).toBe(JOBS);
      expect(counts).toEqual({
        succeeded: JOBS,
        rows: JOBS,
        distinctInvocations: JOBS,
        duplicated: 0,
        lost: 0,
        auditRows: JOBS,
        auditMismatches: 0,
      });
    },
    scale(900_000, 200_000),
  );
});
