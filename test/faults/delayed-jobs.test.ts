import { readFile } from "node:fs/promises";
import { jetstreamManager } from "@nats-io/jetstream";
import { describe, expect, it } from "vitest";
import { delayedStreamName, farStreamName } from "../../runtime/nats/delayed-jobs";
import { eventually } from "../helpers/environment";
import { countApplied, report, scale, useFaultCluster, waitForSucceeded } from "./support/fault-cluster";

// Delayed jobs wait on the server, not in a runtime: each is parked with a nak and a delay, so
// however many wait, a runtime holds at most a batch of them. And they run at their time after
// nats-server restarts while they wait.
const WAITING = scale(100_000, 10_000);
const DUE = scale(2_000, 300);

const cluster = useFaultCluster();

/** Resident memory of a process, in MiB (Linux). */
async function rssMiB(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1]) / 1024;
}

/** Enqueues `count` jobs of fault-insert with `delay`, 500 at a time; returns their ids. */
async function enqueueDelayed(count: number, delay: string, first = 0): Promise<string[]> {
  const client = await cluster().env.client();
  const ids: string[] = [];
  for (let start = 0; start < count; start += 500) {
    const chunk = Array.from({ length: Math.min(500, count - start) }, (_, n) => first + start + n);
    const jobs = await Promise.all(chunk.map((n) => client.enqueue("fault-insert", { n }, { delay })));
    ids.push(...jobs.map((job) => job.id));
  }
  return ids;
}

/** Jobs parked (delivered, not acked) and not delivered yet, over the delayed and far consumers. */
async function delayedConsumer(): Promise<{ parked: number; undelivered: number; far: number }> {
  const manager = await jetstreamManager(cluster().nc);
  const stream = delayedStreamName("JETFN_JOBS");
  const near = await manager.consumers.info(stream, "jetfn-delayed");
  const far = await manager.consumers.info(farStreamName(stream), "jetfn-delayed-far");
  return {
    parked: near.num_ack_pending + far.num_ack_pending,
    undelivered: near.num_pending + far.num_pending,
    far: far.num_ack_pending,
  };
}

describe("delayed jobs", () => {
  it(
    `keeps ${WAITING} waiting jobs on the server, not in the runtime's memory`,
    async () => {
      const pid = cluster().runtimes[0]?.child.pid as number;
      const before = await rssMiB(pid);
      const started = Date.now();
      await enqueueDelayed(WAITING, "1h");
      const enqueueMs = Date.now() - started;
      // Every one was looked at once by a runtime, and parked.
      await eventually(
        async () => {
          const consumer = await delayedConsumer();
          // Due in an hour: each waits in the far stream, none in the delayed-jobs consumer's window.
          return consumer.parked === WAITING && consumer.far === WAITING && consumer.undelivered === 0;
        },
        scale(600_000, 120_000),
      );
      const parkedMs = Date.now() - started;
      const after = await rssMiB(pid);
      const second = await rssMiB(cluster().runtimes[1]?.child.pid as number);
      const [ran] = await cluster().env.database.sql<{ n: number }[]>`select count(*)::int as n from fault_rows`;
      report("delayed-waiting", {
        waiting: WAITING,
        enqueueMs,
        parkedMs,
        rssBeforeMiB: Math.round(before),
        rssAfterMiB: Math.round(after),
        otherRuntimeRssMiB: Math.round(second),
      });
      expect(ran?.n).toBe(0);
      // A batch of messages held at a time, whatever the count: growth is the heap's slack, not the jobs.
      expect(after - before).toBeLessThan(80);
    },
    scale(900_000, 200_000),
  );

  it(
    `runs ${DUE} delayed jobs at their time, once each, across a nats-server restart while they wait`,
    async () => {
      const env = cluster().env;
      const delayMs = 8_000;
      const enqueuedAt = Date.now();
      const ids = await enqueueDelayed(DUE, `${delayMs / 1000}s`, 1_000_000);
      // The timeline, from the first enqueue: the last job is due delayMs after the last enqueue;
      // none can run while nats-server is down.
      const enqueueMs = Date.now() - enqueuedAt;
      await env.nats.restart();
      const restartedMs = Date.now() - enqueuedAt;
      await waitForSucceeded(env, DUE, scale(300_000, 120_000));
      const counts = await countApplied(env, ids);
      const [timing] = await env.database.sql<
        {
          early: number;
          latestMs: number;
          p99Ms: number;
          firstStartMs: number;
          lastStartMs: number;
          firstMovedMs: number;
          lastMovedMs: number;
        }[]
      >`
      select count(*) filter (where started_at < ${new Date(enqueuedAt + delayMs)})::int as early,
             (max(extract(epoch from started_at)) * 1000 - ${enqueuedAt + delayMs}::float8)::int as "latestMs",
             (percentile_cont(0.99) within group (order by extract(epoch from started_at)) * 1000
               - ${enqueuedAt + delayMs}::float8)::int as "p99Ms",
             (min(extract(epoch from started_at)) * 1000 - ${enqueuedAt}::float8)::int as "firstStartMs",
             (max(extract(epoch from started_at)) * 1000 - ${enqueuedAt}::float8)::int as "lastStartMs",
             -- A delayed job's record is enqueued when the mover publishes it to fn.job.<name>:
             -- moved late is the mover's doing, started late can be the functions' throughput.
             (min(extract(epoch from enqueued_at)) * 1000 - ${enqueuedAt}::float8)::int as "firstMovedMs",
             (max(extract(epoch from enqueued_at)) * 1000 - ${enqueuedAt}::float8)::int as "lastMovedMs"
      from jetfn.invocations where id in ${env.database.sql(ids)}`;
      report("delayed-nats-restart", {
        jobs: DUE,
        ...counts,
        ...timing,
        enqueueMs,
        restartedMs,
        lastDueMs: enqueueMs + delayMs,
      });
      expect(counts).toMatchObject({ succeeded: DUE, rows: DUE, duplicated: 0, lost: 0, auditRows: DUE });
      expect(timing?.early).toBe(0);
    },
    scale(600_000, 240_000),
  );
});
