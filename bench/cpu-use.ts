import { readdir, readFile } from "node:fs/promises";
import { cpus } from "node:os";
import { isPostgresProcessOf } from "./postgres-process";

/** CPU time used so far, in milliseconds: by this process and by the servers the contenders talk to. */
export interface CpuReading {
  /** This Node process: producer, workers and (for jetfn) the runtime. */
  node: number;
  /** The `postgres`, `nats-server` and `redis-server` processes in scope (see CpuScope), by name. */
  servers: Record<ServerName, number>;
  at: number;
}

/** Which server processes count towards a contender's drain. */
export interface CpuScope {
  /** Postgres: only this database's backends, and the server's own processes. @default every one */
  database?: string;
  /** NATS: only these nats-servers (the harness's one, or a cluster's nodes). @default every one */
  natsPids?: readonly number[];
}

const SERVERS = ["postgres", "nats-server", "redis-server"] as const;
export type ServerName = (typeof SERVERS)[number];

// Linux reports process CPU time in clock ticks of 1/100 s (USER_HZ, fixed at 100 for user space).
const MS_PER_TICK = 10;

/** Reads CPU use now; undefined where /proc is missing (not Linux), so the figures are skipped. */
export async function readCpu(scope: CpuScope = {}): Promise<CpuReading | undefined> {
  let pids: string[];
  try {
    pids = (await readdir("/proc")).filter((entry) => /^\d+$/.test(entry));
  } catch {
    return undefined;
  }
  const servers: Record<ServerName, number> = { postgres: 0, "nats-server": 0, "redis-server": 0 };
  await Promise.all(
    pids.map(async (pid) => {
      const server = await readProcess(pid);
      if (server && (await inScope(pid, server.name, scope))) servers[server.name] += server.ms;
    }),
  );
  const own = process.cpuUsage();
  return { node: (own.user + own.system) / 1_000, servers, at: performance.now() };
}

/** A server process's name and CPU time (ms), or undefined for any other process or one gone meanwhile. */
async function readProcess(pid: string): Promise<{ name: ServerName; ms: number } | undefined> {
  const stat = await readStat(pid);
  return stat && SERVERS.includes(stat.name as ServerName) ? (stat as { name: ServerName; ms: number }) : undefined;
}

/**
 * CPU time (ms) one process has used so far, by its pid (a child process this one started, such as
 * a runtime of the cluster scenario); undefined once it is gone, or where /proc is missing.
 */
export async function readProcessCpu(pid: number): Promise<number | undefined> {
  return (await readStat(String(pid)))?.ms;
}

/**
 * CPU time (ns) one process has spent running so far, from `/proc/<pid>/schedstat`: finer than
 * `stat`'s 10 ms ticks, for short windows. Undefined once it is gone, or where /proc is missing.
 */
export async function readProcessRunNs(pid: number): Promise<number | undefined> {
  try {
    return Number((await readFile(`/proc/${pid}/schedstat`, "utf8")).split(" ")[0]);
  } catch {
    return undefined;
  }
}

/** A process's command name and CPU time (ms, all its threads), from `/proc/<pid>/stat`. */
async function readStat(pid: string): Promise<{ name: string; ms: number } | undefined> {
  let stat: string;
  try {
    stat = await readFile(`/proc/${pid}/stat`, "utf8");
  } catch {
    return undefined;
  }
  // "pid (comm) state ..."; comm may hold spaces, so split after its closing parenthesis.
  const name = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // utime and stime are fields 14 and 15 of the line, 12 and 13 after "pid (comm)".
  return { name, ms: (Number(fields[11]) + Number(fields[12])) * MS_PER_TICK };
}

async function inScope(pid: string, name: ServerName, scope: CpuScope): Promise<boolean> {
  if (name === "nats-server") return scope.natsPids === undefined || scope.natsPids.includes(Number(pid));
  if (name !== "postgres" || scope.database === undefined) return true;
  try {
    const title = (await readFile(`/proc/${pid}/cmdline`, "utf8")).replace(/\0/g, " ");
    return isPostgresProcessOf(title, scope.database);
  } catch {
    return false; // Gone meanwhile.
  }
}

/** Names of a drain's CPU figures, recorded as "<metric>: <name>" (see job-scenario.ts). */
export const CPU_FIGURES = {
  node: "CPU per job, harness Node process",
  postgres: "CPU per job, Postgres",
  nats: "CPU per job, NATS server",
  redis: "CPU per job, Redis server",
  postgresJobs: "jobs per Postgres core-second",
  busy: "all cores busy",
} as const;

/** Where the CPU went between two readings, per job; busy is the share of every core in use. */
export interface CpuPerJob {
  nodeUs: number;
  /** Per server, µs per job. */
  serverUs: Record<ServerName, number>;
  /** Jobs one fully used core of Postgres would carry at this cost (undefined when none was measured). */
  postgresJobsPerCoreSecond: number | undefined;
  busyPercent: number;
}

/**
 * CPU per job between `before` and `after`. Server processes that started in between count from
 * zero; those that ended in between are missed (none do during a drain: pools stay open).
 */
export function cpuPerJob(before: CpuReading, after: CpuReading, jobs: number): CpuPerJob {
  const nodeMs = after.node - before.node;
  const serverUs = { postgres: 0, "nats-server": 0, "redis-server": 0 };
  let serversMs = 0;
  for (const name of SERVERS) {
    const ms = Math.max(0, after.servers[name] - before.servers[name]);
    serverUs[name] = (ms * 1_000) / jobs;
    serversMs += ms;
  }
  const wallMs = after.at - before.at;
  return {
    nodeUs: (nodeMs * 1_000) / jobs,
    serverUs,
    postgresJobsPerCoreSecond: serverUs.postgres > 0 ? 1_000_000 / serverUs.postgres : undefined,
    busyPercent: (100 * (nodeMs + serversMs)) / (wallMs * cpus().length),
  };
}

/** What a target rate asks of the CPU, next to what a contender spends per job. */
export interface CpuBudget {
  /** CPU per job (Node + Postgres + NATS + Redis) at which the cores, as busy as measured, would reach the rate. */
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
