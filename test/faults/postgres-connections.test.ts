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

// The runtimes' Postgres connections are killed with pg_terminate_backend, again and again, while
// they work. Only this test's own database is touched: the shared Postgres server keeps running.
const JOBS = scale(10_000, 1_000);
const ROUNDS = scale(10, 3);

const cluster = useFaultCluster();

/** Terminates every `jetfn` connection to this test's database; returns how many. */
async function terminateRuntimeConnections(): Promise<number> {
  const rows = await cluster().env.database.sql<{ terminated: boolean }[]>`
    select pg_terminate_backend(pid) as terminated from pg_stat_activity
    where datname = current_database() and application_name = 'jetfn' and pid <> pg_backend_pid()`;
  return rows.filter((row) => row.terminated).length;
}

describe("Postgres connections killed mid-run", () => {
  it(
    `retries the failed attempts; ${JOBS} jobs applied once each`,
    async () => {
      const started = Date.now();
      // Unpatched, postgres.js 3.4.9 could crash the process when a connection's backend was
      // terminated (porsager/postgres#1208) and leak statements into other sessions. With the patch
      // (patches/postgres+3.4.9.patch) neither happens: a crashed runtime is still restarted, as a
      // supervisor would, so the run can finish and report, but any restart fails the test.
      const exited: string[] = [];
      const supervisor = cluster().supervise();
      const { ids, retried } = await enqueueAcknowledged(cluster().js, "fault-insert", JOBS, (n) => ({ n }));
      let terminated = 0;
      for (let round = 1; round <= ROUNDS; round++) {
        await waitForSucceeded(cluster().env, Math.floor((JOBS * round) / (ROUNDS + 2)), 120_000);
        terminated += await terminateRuntimeConnections();
      }
      const succeeded = await waitForSucceeded(cluster().env, JOBS, scale(600_000, 150_000));
      await supervisor.stop();
      for (const runtime of cluster().runtimes) if (runtime.child.exitCode !== null) exited.push(runtime.output());
      const counts = await countApplied(cluster().env, ids);
      const [dead] = await cluster().env.database.sql<{ dead: number }[]>`
        select count(*)::int as dead from jetfn.invocations where function = 'fault-insert' and status <> 'succeeded'`;
      report("pg-terminate", {
        enqueued: ids.length,
        publishRetries: retried,
        rounds: ROUNDS,
        connectionsTerminated: terminated,
        runtimeCrashesRestarted: supervisor.restarts,
        ...counts,
        notSucceeded: dead?.dead,
        redelivered: await countRedelivered(cluster().env),
        durationMs: Date.now() - started,
      });
      expect(terminated).toBeGreaterThan(0);
      expect(exited).toEqual([]);
      expect(succeeded).toBe(JOBS);
      expect(supervisor.restarts).toBe(0);
      // An audit row stamped with another invocation's id means a statement ran in another session.
      expect(counts).toMatchObject({
        succeeded: JOBS,
        rows: JOBS,
        duplicated: 0,
        lost: 0,
        auditRows: JOBS,
        auditMismatches: 0,
      });
    },
    scale(900_000, 200_000),
  );
});
