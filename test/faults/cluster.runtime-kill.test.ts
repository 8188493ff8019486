import { jetstreamManager } from "@nats-io/jetstream";
import { describe, expect, it } from "vitest";
import { drainWithStalls, useClusterRuntimes } from "./support/cluster-runtimes";
import { countApplied, enqueueAcknowledged, report, scale, waitForSucceeded } from "./support/fault-cluster";

// SIGKILL of one of two `jetfn start` processes draining audited one-row jobs from R3 streams on a
// 3-node cluster. It is not started again: the jobs it held unacknowledged must run on the other
// runtime once their ack wait runs out, each applied once.
// Enough that jobs are still running when the victim is killed: on a fast machine two runtimes drained
// the last 750 of 1,000 between two 250 ms polls, and the victim died holding none.
const JOBS = scale(5_000, 3_000);
/** fault-insert's timeout, hence its consumer's ack wait. */
const ACK_WAIT_MS = 2_000;
/**
 * Longest a held job may wait after the kill before the other runtime has run it: the ack wait,
 * plus room for a loaded 2-core machine (the other runtime also works through the queue).
 */
const TAKEOVER_BOUND_MS = ACK_WAIT_MS + 28_000;

const setup = useClusterRuntimes();

describe("a runtime killed on a 3-node cluster", () => {
  it(
    `its unacknowledged jobs run on the other runtime; none of ${JOBS} lost or applied twice`,
    async () => {
      const { database, js, nc, runtimes } = setup();
      const env = { database };
      const manager = await jetstreamManager(nc);
      const { ids, retried } = await enqueueAcknowledged(js, "fault-insert", JOBS, (n) => ({ n }));
      await waitForSucceeded(env, Math.floor(JOBS / 4), 120_000);
      const [victim, survivor] = runtimes;
      const consumer = await manager.consumers.info("JETFN_JOBS", "fault-insert");
      expect(consumer.config.ack_wait).toBe(ACK_WAIT_MS * 1_000_000);
      const heldAtKill = consumer.num_ack_pending;
      const killedAt = new Date();
      process.kill(victim?.child.pid as number, "SIGKILL");
      await victim?.stop();
      const { succeeded, drainedMs, longestStallMs } = await drainWithStalls(database, JOBS, scale(600_000, 240_000));
      const counts = await countApplied(env, ids);
      // A job the victim held and had not committed runs again on the survivor as attempt 2+.
      const [takeover] = await database.sql<{ jobs: number; lastMs: number | null }[]>`
        select count(*)::int as jobs,
          (extract(epoch from max(i.finished_at) - ${killedAt}::timestamptz) * 1000)::int as "lastMs"
        from jetfn.invocations i join fault_rows r on r.invocation = i.id
        where i.function = 'fault-insert' and r.attempt > 1`;
      report("cluster-runtime-kill", {
        enqueued: ids.length,
        publishRetries: retried,
        killedPid: victim?.child.pid,
        ackWaitMs: ACK_WAIT_MS,
        heldBeforeKill: heldAtKill,
        rerunOnSurvivor: takeover?.jobs,
        lastRerunAfterKillMs: takeover?.lastMs,
        drainedAfterKillMs: drainedMs,
        longestStallAfterKillMs: longestStallMs,
        ...counts,
      });
      expect(survivor?.child.exitCode).toBeNull();
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
      // The victim held jobs (16 at a time) when it died, so some ran again on the survivor.
      expect(takeover?.jobs ?? 0).toBeGreaterThan(0);
      expect(takeover?.lastMs ?? Number.POSITIVE_INFINITY).toBeLessThan(TAKEOVER_BOUND_MS);
    },
    scale(900_000, 400_000),
  );
});
