import PgBoss from "pg-boss";
import { waitUntil } from "../stats";
import { type BenchJobInput, drainTimeoutMs, type JobContenderFactory, jobInput } from "./job-contender";
import { createPeerDatabase } from "./peer-database";

const BULK = 1_000;
/**
 * Jobs each worker fetches at once. pg-boss 10 has no per-worker concurrency (N workers run side by
 * side) and a worker waits out its polling interval after each fetch unless handling took longer, so
 * small batches cap it at workers x batch / interval; 250 keeps that cap above what Postgres allows.
 */
const BATCH_SIZE = 250;

/** pg-boss 10: `insert` to fill, `concurrency` workers (`work()` with a batch size) to drain. */
export const createPgBoss: JobContenderFactory = async (context, kind, tag, options) => {
  const { services, sizes } = context;
  const peer = await createPeerDatabase(services, `pgboss_${kind}`, kind, sizes.concurrency, options?.guarantees);
  const boss = new PgBoss({
    connectionString: peer.database.url,
    max: sizes.concurrency + 2,
    supervise: false,
    schedule: false,
  });
  boss.on("error", (error) => context.log(`pg-boss: ${error.message}`));
  await boss.start();
  const queue = `bench_${tag.replace(/[^A-Za-z0-9_]/g, "_")}`;
  await boss.createQueue(queue);
  return {
    name: "pg-boss",
    database: peer.database.name,
    async fill(count) {
      const started = performance.now();
      for (let from = 0; from < count; from += BULK) {
        const jobs = [];
        for (let index = from; index < Math.min(count, from + BULK); index++) {
          jobs.push({ name: queue, data: jobInput(tag, index) });
        }
        await boss.insert(jobs);
      }
      return performance.now() - started;
    },
    async enqueueSequentially(count) {
      const started = performance.now();
      for (let index = 0; index < count; index++) await boss.send(queue, jobInput(tag, index));
      return performance.now() - started;
    },
    async drain(count) {
      let first: number | undefined;
      let done = 0;
      let last = 0;
      for (let worker = 0; worker < sizes.concurrency; worker++) {
        await boss.work<BenchJobInput>(queue, { batchSize: BATCH_SIZE, pollingIntervalSeconds: 0.5 }, async (jobs) => {
          first ??= performance.now();
          for (const job of jobs) await peer.work(job.data, { task: queue, id: job.id });
          done += jobs.length;
          last = performance.now();
        });
      }
      await waitUntil(() => done >= count, `${count} pg-boss jobs`, drainTimeoutMs(count), 2);
      return last - (first ?? Number.NaN);
    },
    async check(count) {
      let completed = -1;
      await waitUntil(
        async () => {
          const [row] = await peer.database.sql`
            select count(*)::int as completed from pgboss.job where name = ${queue} and state = 'completed'`;
          completed = row?.completed as number;
          return completed >= count;
        },
        "pg-boss completions",
        30_000,
        50,
      ).catch(() => undefined);
      const checks = [{ label: "all completed", ok: completed === count, detail: `${completed} completed` }];
      if (kind === "insert") checks.push(...(await peer.checkRows(count, queue)));
      return checks;
    },
    async close() {
      await boss.offWork(queue).catch(() => undefined);
      await boss.stop({ graceful: false, wait: true, timeout: 5_000 });
      await peer.close();
    },
  };
};
