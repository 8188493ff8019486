import { readFile } from "node:fs/promises";
import { jetstreamManager } from "@nats-io/jetstream";
import { describe, expect, it } from "vitest";
import { delayedStreamName, farStreamName } from "../../runtime/nats/delayed-jobs";
import { eventually } from "../helpers/environment";
import { countApplied, report, scale, useFaultCluster, waitForSucceeded } from "./support/fault-cluster";
import { inspectableEnv, type MemoryAfterGc, memoryAfterGc } from "./support/runtime-memory";

// Delayed jobs wait on the server, not in a runtime: each is parked with a nak and a delay, so
// however many wait, a runtime holds at most a bounded batch of them. And they run at their time
// after nats-server restarts while they wait.
const WAITING = scale(100_000, 10_000);
const DUE = scale(2_000, 300);
/**
 * What a runtime may still hold after a full collection, more than before the jobs came, on V8's
 * heap and in buffers each: 10 MiB is 100 bytes per waiting job at full size (one message kept is
 * about 1 KB), while what a mover holds at once (a batch and its publishes) stays under 1 MiB.
 */
const HELD_GROWTH_MIB = 10;
/**
 * Resident memory growth allowed after a full collection. V8's heap is back to its size by then;
 * the rest is the C allocator keeping pages that freed socket reads used (6-32 MiB in six full runs,
 * before and after the mover's reads were bounded). 100,000 messages' bytes kept (about 500 bytes
 * each with their headers) would add 48 MiB more.
 */
const RSS_GROWTH_MIB = 48;
/**
 * A due job is moved to its function within this of its time (or of the server being back), plus
 * the time a runtime was ready to run but waited for a CPU other processes held (its run-queue wait,
 * reported): on this shared 2-core machine that was 1.7-2.4 s of a 3.6 s window at load 7, when the
 * latest moves were 0.6-1.1 s late.
 */
const MOVE_LATENESS_MS = 1_000;

// The runtimes listen for an inspector on a free loopback port, so the test can collect their garbage.
const cluster = useFaultCluster(inspectableEnv());

/** Resident memory of a process, in MiB (Linux). */
async function rssMiB(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1]) / 1024;
}

/**
 * CPU time of a process's main thread so far, and its time runnable but waiting for a CPU taken by
 * other processes (Linux schedstat), in ms: how much the machine's load held the runtime back.
 */
async function mainThreadTimes(pid: number): Promise<{ cpuMs: number; waitMs: number }> {
  const [cpu = 0, wait = 0] = (await readFile(`/proc/${pid}/task/${pid}/schedstat`, "utf8")).split(" ").map(Number);
  return { cpuMs: cpu / 1e6, waitMs: wait / 1e6 };
}

/** Resolves at `time` (epoch ms). */
function at(time: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, Math.max(0, time - Date.now())));
}

/** Samples the runtimes' main threads now; `since()` gives their CPU and run-queue wait from then. */
async function sampleRuntimes(): Promise<{ since(): Promise<{ cpuMs: number[]; waitMs: number[] }> }> {
  const sample = () => Promise.all(cluster().runtimes.map((runtime) => mainThreadTimes(runtime.child.pid as number)));
  const start = await sample();
  return {
    async since() {
      const end = await sample();
      return {
        cpuMs: end.map((times, index) => Math.round(times.cpuMs - (start[index]?.cpuMs ?? 0))),
        waitMs: end.map((times, index) => Math.round(times.waitMs - (start[index]?.waitMs ?? 0))),
      };
    },
  };
}

/**
 * Enqueues `count` jobs of fault-insert due `delayMs` after their enqueue, 500 at a time (each 500
 * due at one instant); returns each one's id and due time (epoch ms).
 */
async function enqueueDelayed(count: number, delayMs: number, first = 0): Promise<{ id: string; due: number }[]> {
  const client = await cluster().env.client();
  const jobs: { id: string; due: number }[] = [];
  for (let start = 0; start < count; start += 500) {
    const due = Date.now() + delayMs;
    const chunk = Array.from({ length: Math.min(500, count - start) }, (_, n) => first + start + n);
    const enqueued = await Promise.all(
      chunk.map((n) => client.enqueue("fault-insert", { n }, { runAt: new Date(due) })),
    );
    jobs.push(...enqueued.map((job) => ({ id: job.id, due })));
  }
  return jobs;
}

/** Jobs parked (delivered, not acked) and not delivered yet, over the delayed and far consumers. */
async function delayedConsumer(): Promise<{ parked: number; undelivered: number; far: number; farDelivered: number }> {
  const manager = await jetstreamManager(cluster().nc);
  const stream = delayedStreamName("JETFN_JOBS");
  const near = await manager.consumers.info(stream, "jetfn-delayed");
  const far = await manager.consumers.info(farStreamName(stream), "jetfn-delayed-far");
  return {
    parked: near.num_ack_pending + far.num_ack_pending,
    undelivered: near.num_pending + far.num_pending,
    far: far.num_ack_pending,
    // Deliveries so far, redeliveries included: how many far jobs a runtime looked at again.
    farDelivered: far.delivered.consumer_seq,
  };
}

/** Memory of both runtimes after a forced collection. */
function runtimesAfterGc(): Promise<MemoryAfterGc[]> {
  return Promise.all(cluster().runtimes.map((runtime) => memoryAfterGc(runtime)));
}

const rounded = (mib: number) => Math.round(mib * 10) / 10;

function percentile(values: number[], fraction: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * fraction))] ?? 0;
}

/** The largest value per distinct key (due time), keys in ascending order. */
function chunkMaxima(values: number[], keys: number[]): number[] {
  const maxima = new Map<number, number>();
  values.forEach((value, index) => {
    const key = keys[index] ?? 0;
    maxima.set(key, Math.max(maxima.get(key) ?? -Infinity, value));
  });
  return [...maxima.entries()].sort(([a], [b]) => a - b).map(([, value]) => value);
}

describe("delayed jobs", () => {
  it(
    `keeps ${WAITING} waiting jobs on the server, not in the runtime's memory`,
    async () => {
      const pid = cluster().runtimes[0]?.child.pid as number;
      const before = await runtimesAfterGc();
      const rssBefore = await rssMiB(pid);
      const started = Date.now();
      await enqueueDelayed(WAITING, 3_600_000);
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
      // Resident memory as it is, collected or not; then both runtimes' memory after a full collection.
      const rssAfter = await rssMiB(pid);
      const after = await runtimesAfterGc();
      const [ran] = await cluster().env.database.sql<{ n: number }[]>`select count(*)::int as n from fault_rows`;
      const growth = after.map((memory, index) => {
        const was = before[index] as MemoryAfterGc;
        return {
          heapMiB: memory.heapUsedMiB - was.heapUsedMiB,
          externalMiB: memory.externalMiB - was.externalMiB,
          rssMiB: memory.rssMiB - was.rssMiB,
        };
      });
      report("delayed-waiting", {
        waiting: WAITING,
        enqueueMs,
        parkedMs,
        rssBeforeMiB: Math.round(rssBefore),
        rssAfterMiB: Math.round(rssAfter),
        heapBeforeGcMiB: before.map((memory) => rounded(memory.heapUsedMiB)),
        heapAfterGcMiB: after.map((memory) => rounded(memory.heapUsedMiB)),
        rssBeforeGcMiB: before.map((memory) => rounded(memory.rssMiB)),
        rssAfterGcMiB: after.map((memory) => rounded(memory.rssMiB)),
        // Where resident memory went: V8's heap (its young generation apart) and the rest.
        heapTotalBeforeGcMiB: before.map((memory) => rounded(memory.heapTotalMiB)),
        heapTotalAfterGcMiB: after.map((memory) => rounded(memory.heapTotalMiB)),
        youngBeforeGcMiB: before.map((memory) => rounded(memory.youngMiB)),
        youngAfterGcMiB: after.map((memory) => rounded(memory.youngMiB)),
        externalBeforeGcMiB: before.map((memory) => rounded(memory.externalMiB)),
        externalAfterGcMiB: after.map((memory) => rounded(memory.externalMiB)),
      });
      expect(ran?.n).toBe(0);
      // Whatever the count, a runtime holds a bounded batch at a time and keeps nothing per job.
      for (const { heapMiB, externalMiB, rssMiB } of growth) {
        expect(heapMiB).toBeLessThan(HELD_GROWTH_MIB);
        expect(externalMiB).toBeLessThan(HELD_GROWTH_MIB);
        expect(rssMiB).toBeLessThan(RSS_GROWTH_MIB);
      }
    },
    scale(900_000, 200_000),
  );

  it(
    `runs ${DUE} delayed jobs at their time, once each, across a nats-server restart while they wait`,
    async () => {
      const env = cluster().env;
      const delayMs = 8_000;
      const farBefore = await delayedConsumer();
      const enqueuedAt = Date.now();
      // Due 8 s after their enqueue, 500 at one instant; none can move while nats-server is down.
      const jobs = await enqueueDelayed(DUE, delayMs, 1_000_000);
      const ids = jobs.map((job) => job.id);
      const enqueueMs = Date.now() - enqueuedAt;
      const dues = jobs.map((job) => job.due);
      // The runtimes' main threads from just before the first due time to 2 s after the last (or
      // after the server is back): when the moves happen.
      const burstStart = at(Math.min(...dues) - 500).then(sampleRuntimes);
      await env.nats.restart();
      const backAt = Date.now();
      await at(Math.max(...dues, backAt) + 2_000);
      const burst = await (await burstStart).since();
      await waitForSucceeded(env, DUE, scale(300_000, 120_000));
      const counts = await countApplied(env, ids);
      const records = await env.database.sql<{ id: string; moved: Date; started: Date }[]>`
        select id, enqueued_at as moved, started_at as started from jetfn.invocations where id in ${env.database.sql(ids)}`;
      // A delayed job's record is enqueued when the mover publishes it to fn.job.<name>: moved late
      // is the mover's doing, started late can be the function's throughput. A job is late from its
      // due time, or from the server being back when that came later.
      const dueOf = new Map(jobs.map((job) => [job.id, job.due]));
      const lateness = records.map((row) => row.moved.getTime() - Math.max(dueOf.get(row.id) ?? 0, backAt));
      const early = records.filter((row) => row.started.getTime() < (dueOf.get(row.id) ?? 0)).length;
      const since = (times: number[], pick: (values: number[]) => number) => pick(times) - enqueuedAt;
      const moved = records.map((row) => row.moved.getTime());
      const started = records.map((row) => row.started.getTime());
      const farAfter = await delayedConsumer();
      // The timeline, in ms from the first enqueue.
      report("delayed-nats-restart", {
        jobs: DUE,
        ...counts,
        enqueueMs,
        backMs: backAt - enqueuedAt,
        lastDueMs: Math.max(...jobs.map((job) => job.due)) - enqueuedAt,
        firstMovedMs: since(moved, (values) => Math.min(...values)),
        lastMovedMs: since(moved, (values) => Math.max(...values)),
        maxLateMs: Math.max(...lateness),
        p50LateMs: percentile(lateness, 0.5),
        p99LateMs: percentile(lateness, 0.99),
        // Per 500 due at one instant, in enqueue order.
        lateByChunkMs: chunkMaxima(
          lateness,
          records.map((row) => dueOf.get(row.id) ?? 0),
        ),
        lateMoves: lateness.filter((ms) => ms > MOVE_LATENESS_MS).length,
        early,
        firstStartMs: since(started, (values) => Math.min(...values)),
        lastStartMs: since(started, (values) => Math.max(...values)),
        // Far jobs a runtime looked at again during the restart (each waits an hour).
        farRedelivered: farAfter.farDelivered - farBefore.farDelivered,
        // While the jobs fell due: each runtime's main thread on a CPU, and waiting for one.
        burstCpuMs: burst.cpuMs,
        burstRunQueueWaitMs: burst.waitMs,
      });
      expect(counts).toMatchObject({ succeeded: DUE, rows: DUE, duplicated: 0, lost: 0, auditRows: DUE });
      expect(early).toBe(0);
      // 1 s, plus the time the machine's load kept a runtime off every CPU while the jobs fell due.
      expect(Math.max(...lateness)).toBeLessThanOrEqual(MOVE_LATENESS_MS + Math.max(...burst.waitMs));
    },
    scale(600_000, 240_000),
  );
});
