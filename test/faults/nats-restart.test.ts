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

// nats-server stopped and started again (same port, same store) while two `jetfn start` processes
// work and a publisher keeps enqueueing. Nothing restarts the runtimes: they must reconnect alone.
const JOBS = scale(10_000, 1_000);

const cluster = useFaultCluster();

describe("nats-server restarted mid-run", () => {
  it(
    `loses none of ${JOBS} acknowledged jobs and applies each once`,
    async () => {
      const started = Date.now();
      // Publish in two halves; the server restarts while the second half is being published.
      const first = await enqueueAcknowledged(cluster().js, "fault-insert", JOBS / 2, (n) => ({ n }));
      await waitForSucceeded(cluster().env, Math.floor(JOBS / 4), 120_000);
      const second = enqueueAcknowledged(cluster().js, "fault-insert", JOBS / 2, (n) => ({ n: JOBS / 2 + n }));
      const restartStarted = Date.now();
      await cluster().env.nats.restart();
      const restartMs = Date.now() - restartStarted;
      const { ids: later, retried } = await second;
      const ids = [...first.ids, ...later];
      const succeeded = await waitForSucceeded(cluster().env, JOBS, scale(600_000, 150_000));
      const counts = await countApplied(cluster().env, ids);
      const reconnected = cluster().runtimes.map((runtime) => runtime.output().includes("Reconnected to NATS"));
      report("nats-restart", {
        enqueued: ids.length,
        publishRetries: first.retried + retried,
        restartMs,
        reconnected,
        ...counts,
        redelivered: await countRedelivered(cluster().env),
        durationMs: Date.now() - started,
      });
      expect(reconnected).toEqual([true, true]);
      expect(cluster().runtimes.every((runtime) => runtime.child.exitCode === null)).toBe(true);
      expect(succeeded).toBe(JOBS);
      expect(counts).toMatchObject({ succeeded: JOBS, rows: JOBS, duplicated: 0, lost: 0, auditRows: JOBS });
    },
    scale(900_000, 200_000),
  );
});
