import type { JobContender, JobContenderFactory, JobContenderOptions, JobKind } from "./contenders/job-contender";
import { CPU_FIGURES, type CpuPerJob, cpuPerJob, readCpu } from "./cpu-use";
import type { Direction, RoundContext } from "./model";
import { rotate } from "./stats";

/** A contender of a job scenario, and whether its fill counts as its batched enqueue rate. */
export interface JobEntry {
  name: string;
  create: JobContenderFactory;
  recordFill: boolean;
  options?: JobContenderOptions;
  /** Why it cannot run on this machine, if it cannot. */
  unavailable?: (context: RoundContext) => string | undefined;
}

/** Scenario id under which batched fills are reported (scenario 4). */
export const ENQUEUE_SCENARIO = "enqueue";
export const BATCHED_ENQUEUE_METRIC = "enqueue, batched";

/**
 * One round of a job scenario: each contender in turn (a different one first each round) fills its
 * queue, drains it with its workers, and has its outcome checked.
 */
export async function runJobRound(
  context: RoundContext,
  kind: JobKind,
  count: number,
  metric: string,
  entries: readonly JobEntry[],
): Promise<void> {
  const asked = entries.filter((entry) => context.contenders?.includes(entry.name) ?? true);
  for (const entry of rotate(asked, context.round)) {
    const reason = entry.unavailable?.(context);
    if (reason) {
      context.skip(entry.name, reason);
      continue;
    }
    const tag = `${kind}-r${context.round}-${Date.now().toString(36)}`;
    let contender: JobContender | undefined;
    try {
      contender = await entry.create(context, kind, tag, entry.options);
      const fillMs = await contender.fill(count);
      if (entry.recordFill) {
        context.record({
          scenario: ENQUEUE_SCENARIO,
          metric: BATCHED_ENQUEUE_METRIC,
          contender: entry.name,
          unit: "jobs/s",
          better: "higher",
          value: (count * 1000) / fillMs,
        });
      }
      const { natsPid } = context.services;
      const scope = { database: contender.database, natsPids: natsPid === undefined ? undefined : [natsPid] };
      const cpuBefore = await readCpu(scope);
      const drainMs = await contender.drain(count);
      const cpuAfter = await readCpu(scope);
      context.record({
        metric,
        contender: entry.name,
        unit: "jobs/s",
        better: "higher",
        value: (count * 1000) / drainMs,
      });
      if (cpuBefore && cpuAfter) recordCpu(context, metric, entry.name, cpuPerJob(cpuBefore, cpuAfter, count));
      for (const check of await contender.check(count)) context.check(entry.name, check.label, check.ok, check.detail);
      context.log(`${entry.name}: ${count} ${kind} jobs drained in ${Math.round(drainMs)} ms`);
    } finally {
      await contender?.close();
    }
  }
}

/**
 * How close a drain came to the machine's limit: CPU per job in this process and in each server
 * (Postgres: the contender's database and the server's own processes; the harness's nats-server;
 * Redis), the jobs one Postgres core would carry, and how busy all cores were. Measured over the
 * whole drain call, so the workers' start-up is included.
 */
function recordCpu(context: RoundContext, metric: string, contender: string, cpu: CpuPerJob): void {
  const figures: Array<[string, string, Direction, number | undefined]> = [
    [CPU_FIGURES.node, "µs", "lower", cpu.nodeUs],
    [CPU_FIGURES.postgres, "µs", "lower", cpu.serverUs.postgres],
    [CPU_FIGURES.nats, "µs", "lower", cpu.serverUs["nats-server"]],
    [CPU_FIGURES.redis, "µs", "lower", cpu.serverUs["redis-server"]],
    [CPU_FIGURES.postgresJobs, "jobs", "higher", cpu.postgresJobsPerCoreSecond],
    [CPU_FIGURES.busy, "%", "lower", cpu.busyPercent],
  ];
  for (const [name, unit, better, value] of figures) {
    if (value !== undefined) context.record({ metric: `${metric}: ${name}`, contender, unit, better, value });
  }
}
