import { readdir, readFile } from "node:fs/promises";
import { cpus } from "node:os";

/** CPU time used so far, in milliseconds: by this process and by the servers the contenders talk to. */
export interface CpuReading {
  /** This Node process: producer, workers and (for jetfn) the runtime. */
  node: number;
  /** Every `postgres`, `nats-server` and `redis-server` process on the machine, by name. */
  servers: Record<ServerName, number>;
  at: number;
}

const SERVERS = ["postgres", "nats-server", "redis-server"] as const;
type ServerName = (typeof SERVERS)[number];

// Linux reports process CPU time in clock ticks of 1/100 s (USER_HZ, fixed at 100 for user space).
const MS_PER_TICK = 10;

/** Reads CPU use now; undefined where /proc is missing (not Linux), so the figures are skipped. */
export async function readCpu(): Promise<CpuReading | undefined> {
  let pids: string[];
  try {
    pids = (await readdir("/proc")).filter((entry) => /^\d+$/.test(entry));
  } catch {
    return undefined;
  }
  const servers: Record<ServerName, number> = { postgres: 0, "nats-server": 0, "redis-server": 0 };
  await Promise.all(
    pids.map(async (pid) => {
      let stat: string;
      try {
        stat = await readFile(`/proc/${pid}/stat`, "utf8");
      } catch {
        return; // Gone meanwhile.
      }
      // "pid (comm) state ..."; comm may hold spaces, so split after its closing parenthesis.
      const name = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")")) as ServerName;
      if (!SERVERS.includes(name)) return;
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      // utime and stime are fields 14 and 15 of the line, 12 and 13 after "pid (comm)".
      servers[name] += (Number(fields[11]) + Number(fields[12])) * MS_PER_TICK;
    }),
  );
  const own = process.cpuUsage();
  return { node: (own.user + own.system) / 1_000, servers, at: performance.now() };
}

/** Names of a drain's CPU figures, recorded as "<metric>: <name>" (see job-scenario.ts). */
export const CPU_FIGURES = {
  node: "CPU per job, harness Node process",
  servers: "CPU per job, Postgres + NATS + Redis servers",
  busy: "all cores busy",
} as const;

/** Where the CPU went between two readings, per job; busy is the share of every core in use. */
export interface CpuPerJob {
  nodeUs: number;
  serversUs: number;
  busyPercent: number;
}

/**
 * CPU per job between `before` and `after`. Server processes that started in between count from
 * zero; those that ended in between are missed (none do during a drain: pools stay open).
 */
export function cpuPerJob(before: CpuReading, after: CpuReading, jobs: number): CpuPerJob {
  const nodeMs = after.node - before.node;
  let serversMs = 0;
  for (const name of SERVERS) serversMs += Math.max(0, after.servers[name] - before.servers[name]);
  const wallMs = after.at - before.at;
  return {
    nodeUs: (nodeMs * 1_000) / jobs,
    serversUs: (serversMs * 1_000) / jobs,
    busyPercent: (100 * (nodeMs + serversMs)) / (wallMs * cpus().length),
  };
}

/** What a target rate asks of the CPU, next to what a contender spends per job. */
export interface CpuBudget {
  /** CPU per job (Node + servers) at which the cores, as busy as measured, would reach the rate. */
  allowedUs: number;
  spentUs: number;
  /** How many times too much CPU per job is spent (below 1: within budget). */
  over: number;
}

/**
 * The CPU budget per job of a drain rate: a drain that keeps `busyPercent` of `cores` busy reaches
 * `rate` jobs/s only if each job costs at most cores x busy / rate of CPU. Near saturation this is a
 * limit no tuning of waits can beat: only less work per job can.
 */
export function cpuBudget(rate: number, cores: number, busyPercent: number, spentUs: number): CpuBudget {
  const allowedUs = (cores * (busyPercent / 100) * 1_000_000) / rate;
  return { allowedUs, spentUs, over: spentUs / allowedUs };
}
