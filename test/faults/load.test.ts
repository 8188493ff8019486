import { readFile } from "node:fs/promises";
import { jetstreamManager } from "@nats-io/jetstream";
import { describe, expect, it } from "vitest";
import {
  countApplied,
  enqueueAcknowledged,
  report,
  scale,
  useFaultCluster,
  waitForSucceeded,
} from "./support/fault-cluster";

// A sustained mixed run against two `jetfn start` processes: callers calling `add` and `echo`, and a
// producer enqueueing `fault-insert` jobs at a steady rate, with memory and in-flight work sampled.
const DURATION_MS = scale(180_000, 20_000);
const JOBS_PER_SECOND = scale(200, 100);
const CALLERS = 4;
const SAMPLE_MS = 2_000;

const cluster = useFaultCluster();

async function rssMb(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  return Math.round(Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0) / 1024);
}

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return Math.round((sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))] ?? 0) * 10) / 10;
}

describe("sustained mixed load", () => {
  it(
    `stays flat for ${DURATION_MS / 1000}s: memory, latency, nothing lost`,
    async () => {
      const started = Date.now();
      const until = started + DURATION_MS;
      const latencies: { at: number; ms: number }[] = [];
      let callFailures = 0;
      const caller = async (index: number): Promise<void> => {
        while (Date.now() < until) {
          const begin = performance.now();
          try {
            if (index % 2 === 0) await cluster().nc.request("fn.call.add", '{"a":1,"b":2}', { timeout: 5_000 });
            else await cluster().nc.request("fn.call.echo", '{"value":{"k":[1,2,3]}}', { timeout: 5_000 });
            latencies.push({ at: Date.now() - started, ms: performance.now() - begin });
          } catch {
            callFailures++;
          }
        }
      };
      const ids: string[] = [];
      const producer = async (): Promise<void> => {
        let second = 0;
        while (Date.now() < until) {
          const tick = Date.now();
          const batch = await enqueueAcknowledged(cluster().js, "fault-insert", JOBS_PER_SECOND, (n) => ({
            n: second * JOBS_PER_SECOND + n,
          }));
          ids.push(...batch.ids);
          second++;
          await new Promise((resolve) => setTimeout(resolve, Math.max(0, 1_000 - (Date.now() - tick))));
        }
      };
      const manager = await jetstreamManager(cluster().nc);
      const samples: { at: number; rssMb: number[]; inFlight: number; backlog: number }[] = [];
      const sampler = async (): Promise<void> => {
        while (Date.now() < until) {
          await new Promise((resolve) => setTimeout(resolve, SAMPLE_MS));
          const info = await manager.consumers.info("JETFN_JOBS", "fault-insert");
          samples.push({
            at: Date.now() - started,
            rssMb: await Promise.all(cluster().runtimes.map((runtime) => rssMb(runtime.child.pid as number))),
            inFlight: info.num_ack_pending,
            backlog: info.num_pending,
          });
        }
      };
      await Promise.all([...Array.from({ length: CALLERS }, (_, index) => caller(index)), producer(), sampler()]);
      const drained = await waitForSucceeded(cluster().env, ids.length, 120_000);
      const counts = await countApplied(cluster().env, ids);
      const half = DURATION_MS / 2;
      const firstHalf = latencies.filter((sample) => sample.at < half).map((sample) => sample.ms);
      const secondHalf = latencies.filter((sample) => sample.at >= half).map((sample) => sample.ms);
      const warm = samples[Math.floor(samples.length / 4)] as (typeof samples)[number];
      const last = samples[samples.length - 1] as (typeof samples)[number];
      const figures = {
        durationS: DURATION_MS / 1000,
        calls: latencies.length,
        callFailures,
        callsPerSecond: Math.round(latencies.length / (DURATION_MS / 1000)),
        latencyFirstHalf: { p50: percentile(firstHalf, 50), p99: percentile(firstHalf, 99) },
        latencySecondHalf: { p50: percentile(secondHalf, 50), p99: percentile(secondHalf, 99) },
        jobsEnqueued: ids.length,
        ...counts,
        rssMbWarm: warm.rssMb,
        rssMbLast: last.rssMb,
        maxInFlight: Math.max(...samples.map((sample) => sample.inFlight)),
        maxBacklog: Math.max(...samples.map((sample) => sample.backlog)),
        samples: samples.map((sample) => [Math.round(sample.at / 1000), sample.rssMb, sample.inFlight, sample.backlog]),
      };
      report("load", figures);
      expect(callFailures).toBe(0);
      expect(drained).toBe(ids.length);
      expect(counts).toMatchObject({ rows: ids.length, duplicated: 0, lost: 0, auditRows: ids.length });
      for (const [index, mb] of last.rssMb.entries()) expect(mb).toBeLessThan((warm.rssMb[index] as number) * 1.5 + 30);
      expect(figures.latencySecondHalf.p99).toBeLessThan(figures.latencyFirstHalf.p99 * 3 + 200);
    },
    scale(600_000, 200_000),
  );
});
