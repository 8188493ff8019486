import type { Queue, Worker } from "bullmq";
import { waitUntil } from "../stats";
import { drainTimeoutMs, type JobContenderFactory, jobInput } from "./job-contender";
import { createPeerDatabase } from "./peer-database";

const BULK = 1_000;
const TASK = "bench";

/** BullMQ on Redis: `addBulk` to fill, a Worker with the same concurrency to drain. */
export const createBullmq: JobContenderFactory = async (context, kind, tag, options) => {
  const { services, sizes } = context;
  if (services.bullmqUnavailable) throw new Error(services.bullmqUnavailable);
  const { Queue: QueueClass, Worker: WorkerClass } = await import("bullmq");
  const connection = await services.redis();
  const peer = await createPeerDatabase(services, `bullmq_${kind}`, kind, sizes.concurrency, options?.guarantees);
  const queueName = `jetfn-bench-${process.pid}-${tag}`;
  const queue: Queue = new QueueClass(queueName, { connection });
  let worker: Worker | undefined;
  return {
    name: "BullMQ",
    database: peer.database.name,
    async fill(count) {
      const started = performance.now();
      for (let from = 0; from < count; from += BULK) {
        const jobs = [];
        for (let index = from; index < Math.min(count, from + BULK); index++) {
          jobs.push({ name: TASK, data: jobInput(tag, index) });
        }
        await queue.addBulk(jobs);
      }
      return performance.now() - started;
    },
    async enqueueSequentially(count) {
      const started = performance.now();
      for (let index = 0; index < count; index++) await queue.add(TASK, jobInput(tag, index));
      return performance.now() - started;
    },
    async drain(count) {
      let first: number | undefined;
      let completed = 0;
      let last = 0;
      worker = new WorkerClass(
        queueName,
        async (job) => {
          first ??= performance.now();
          await peer.work(job.data, { task: job.name, id: job.id ?? "" });
        },
        { connection, concurrency: sizes.concurrency },
      );
      worker.on("completed", () => {
        completed++;
        last = performance.now();
      });
      await waitUntil(() => completed >= count, `${count} BullMQ jobs`, drainTimeoutMs(count), 2);
      return last - (first ?? Number.NaN);
    },
    async check(count) {
      const counts = await queue.getJobCounts("completed", "waiting", "active", "failed", "delayed");
      const checks = [
        {
          label: "all completed",
          ok: counts.completed === count && counts.failed === 0 && counts.waiting === 0 && counts.active === 0,
          detail: JSON.stringify(counts),
        },
      ];
      if (kind === "insert") checks.push(...(await peer.checkRows(count, TASK)));
      return checks;
    },
    async close() {
      await worker?.close();
      await queue.obliterate({ force: true }).catch(() => undefined);
      await queue.close();
      await peer.close();
    },
  };
};
