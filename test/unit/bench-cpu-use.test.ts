import { cpus } from "node:os";
import { describe, expect, it } from "vitest";
import { type CpuReading, cpuBudget, cpuPerJob, readCpu, readProcessCpu } from "../../bench/cpu-use";

function reading(node: number, postgres: number, nats: number, redis: number, at: number): CpuReading {
  return { node, servers: { postgres, "nats-server": nats, "redis-server": redis }, at };
}

describe("cpuPerJob", () => {
  it("splits the CPU used between two readings per job, and says how busy the cores were", () => {
    const before = reading(1_000, 500, 100, 0, 10_000);
    const after = reading(1_600, 800, 150, 50, 11_000);
    const perJob = cpuPerJob(before, after, 1_000);
    expect(perJob.nodeUs).toBeCloseTo(600);
    expect(perJob.serverUs.postgres).toBeCloseTo(300);
    expect(perJob.serverUs["nats-server"]).toBeCloseTo(50);
    expect(perJob.serverUs["redis-server"]).toBeCloseTo(50);
    // 300 µs of Postgres CPU per job: one Postgres core carries 3,333 jobs a second.
    expect(perJob.postgresJobsPerCoreSecond).toBeCloseTo(1_000_000 / 300);
    expect(perJob.busyPercent).toBeCloseTo((100 * 1_000) / (1_000 * cpus().length));
  });

  it("never counts a server's CPU as negative when its processes ended in between", () => {
    const perJob = cpuPerJob(reading(0, 900, 0, 0, 0), reading(10, 100, 0, 0, 100), 10);
    expect(perJob.serverUs.postgres).toBe(0);
    // No Postgres CPU measured: no jobs-per-core figure rather than an infinite one.
    expect(perJob.postgresJobsPerCoreSecond).toBeUndefined();
  });
});

describe("readCpu", () => {
  it.runIf(process.platform === "linux")("sees this process's CPU time grow, and the Postgres servers", async () => {
    const before = await readCpu();
    const until = performance.now() + 50;
    while (performance.now() < until) Math.sqrt(Math.random());
    const after = await readCpu();
    expect(before && after).toBeTruthy();
    expect((after?.node ?? 0) - (before?.node ?? 0)).toBeGreaterThan(20);
    // The tests run against a Postgres on this machine, whose processes have used some CPU.
    expect(after?.servers.postgres).toBeGreaterThan(0);
  });

  it.runIf(process.platform === "linux")("counts no nats-server but the one it is scoped to", async () => {
    const scoped = await readCpu({ natsPids: [-1] });
    expect(scoped?.servers["nats-server"]).toBe(0);
  });
});

describe("readProcessCpu", () => {
  it.runIf(process.platform === "linux")(
    "reads one process's CPU time by its pid, none for a pid that is gone",
    async () => {
      const before = await readProcessCpu(process.pid);
      // Spin until 60 ms of CPU are used (not of wall time: on a loaded machine that may be far less).
      const start = process.cpuUsage();
      while (process.cpuUsage(start).user + process.cpuUsage(start).system < 60_000) Math.sqrt(Math.random());
      const after = await readProcessCpu(process.pid);
      expect((after ?? 0) - (before ?? 0)).toBeGreaterThan(20);
      expect(await readProcessCpu(2 ** 31 - 1)).toBeUndefined();
    },
  );
});

describe("cpuBudget", () => {
  it("allows cores x busy / rate of CPU per job, and says how far over it a contender is", () => {
    // 2 cores 80 % busy: 1.6 s of CPU per second; at 8,000 jobs/s that is 200 µs a job.
    const budget = cpuBudget(8_000, 2, 80, 300);
    expect(budget.allowedUs).toBeCloseTo(200);
    expect(budget.spentUs).toBe(300);
    expect(budget.over).toBeCloseTo(1.5);
    expect(cpuBudget(1_000, 4, 50, 1_000).over).toBeCloseTo(0.5);
  });
});
