import { Logger, makeWorkerUtils, type Runner, run, runMigrations, type WorkerUtils } from "graphile-worker";
import pg from "pg";
import { waitUntil } from "../stats";
import { type BenchJobInput, drainTimeoutMs, type JobContenderFactory, jobInput } from "./job-contender";
import { createPeerDatabase } from "./peer-database";

const BULK = 1_000;
const TASK = "bench_task";
const quiet = new Logger(() => () => {});

/**
 * graphile-worker with its documented batching on (local queue, batched completions): `addJobs` to
 * fill, `run()` with the same concurrency to drain.
 */
export const createGraphileWorker: JobContenderFactory = async (context, kind, tag, options) => {
  const { services, sizes } = context;
  const peer = await createPeerDatabase(services, `graphile_${kind}`, kind, sizes.concurrency, options?.guarantees);
  const connectionString = peer.database.url;
  // Our own pool (pg, as graphile-worker uses), so its errors are handled and its end is awaited.
  const pgPool = new pg.Pool({ connectionString, max: sizes.concurrency + 2 });
  pgPool.on("error", (error) => context.log(`graphile-worker pool: ${error.message}`));
  pgPool.on("connect", (client) =>
    client.on("error", (error) => context.log(`graphile-worker client: ${error.message}`)),
  );
  await runMigrations({ pgPool, logger: quiet });
  const utils: WorkerUtils = await makeWorkerUtils({ pgPool, logger: quiet });
  let runner: Runner | undefined;
  return {
    name: "graphile-worker",
    database: peer.database.name,
    async fill(count) {
      const started = performance.now();
      for (let from = 0; from < count; from += BULK) {
        const specs = [];
        for (let index = from; index < Math.min(count, from + BULK); index++) {
          specs.push({ identifier: TASK, payload: jobInput(tag, index) });
        }
        await utils.addJobs(specs);
      }
      return performance.now() - started;
    },
    async enqueueSequentially(count) {
      const started = performance.now();
      for (let index = 0; index < count; index++) await utils.addJob(TASK, jobInput(tag, index));
      return performance.now() - started;
    },
    async drain(count) {
      let first: number | undefined;
      let done = 0;
      let last = 0;
      runner = await run({
        pgPool,
        concurrency: sizes.concurrency,
        noHandleSignals: true,
        pollInterval: 1_000,
        logger: quiet,
        preset: {
          worker: { localQueue: { size: sizes.concurrency * 8 }, completeJobBatchDelay: 0, failJobBatchDelay: 0 },
        },
        taskList: {
          [TASK]: async (payload, helpers) => {
            first ??= performance.now();
            await peer.work(payload as BenchJobInput, { task: TASK, id: helpers.job.id });
            done++;
            last = performance.now();
          },
        },
      });
      await waitUntil(() => done >= count, `${count} graphile-worker jobs`, drainTimeoutMs(count), 2);
      return last - (first ?? Number.NaN);
    },
    async check(count) {
      // Completions are batched; wait for them before counting what is left.
      let left = -1;
      await waitUntil(
        async () => {
          const [row] = await peer.database.sql`select count(*)::int as left from graphile_worker.jobs`;
          left = row?.left as number;
          return left === 0;
        },
        "graphile-worker completions",
        30_000,
        50,
      ).catch(() => undefined);
      const checks = [{ label: "all completed", ok: left === 0, detail: `${left} jobs left in the queue` }];
      if (kind === "insert") checks.push(...(await peer.checkRows(count, TASK)));
      return checks;
    },
    async close() {
      await runner?.stop();
      await utils.release();
      await pgPool.end();
      await peer.close();
    },
  };
};
