import { jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { resolveConfig } from "../runtime/config";
import { consumerName, JOB_PREFIX } from "../runtime/nats/subjects";
import { createClient, type JetfnClient } from "../runtime/sdk/client";
import { type NatsCluster, startNatsClusterProcesses } from "../test/helpers/nats-cluster-processes";
import { CLUSTER_CPU, CLUSTER_KINDS, clusterMetric, replicasLabel } from "./cluster-metrics";
import { clusterSection } from "./cluster-section";
import { checkJetfnJobs } from "./contenders/jetfn-jobs";
import { BENCH_TABLE_SQL, drainTimeoutMs, type JobKind, jobInput } from "./contenders/job-contender";
import { type CpuReading, cpuPerJob, readCpu } from "./cpu-use";
import { createFunctionsFolder, type FunctionsFolder, insertFunctionSource, noopFunctionSource } from "./jetfn-host";
import type { BenchSizes, RoundContext, Scenario } from "./model";
import { type RuntimeChildren, startRuntimeChildren } from "./runtime-children";
import { rotate, runPool } from "./stats";

/**
 * 9. Runtimes on a 3-node NATS cluster: for 1 and 3 replicas, and 1, 2 and 3 runtimes (each a child
 * process), a queue of no-op or insert jobs filled and then drained, with each drain's CPU per job.
 * Opt-in (`--only cluster`): a round starts a cluster and 24 runtime processes.
 */
export const clusterScaleScenario: Scenario = {
  id: "cluster",
  title: "9. Runtimes on a 3-node NATS cluster",
  baselines: clusterBaselines,
  targets: [],
  optIn: true,
  section: clusterSection,
  async run(context) {
    const cluster = await startNatsClusterProcesses();
    let nc: NatsConnection | undefined;
    let client: JetfnClient | undefined;
    try {
      nc = await connect({ servers: cluster.nodes.map((node) => node.url), name: "jetfn-bench-cluster" });
      client = await createClient({ connection: nc });
      for (const replicas of rotate(context.sizes.clusterReplicas, context.round)) {
        // Streams and buckets are made anew at each replica count (jetfn never lowers replicas).
        await deleteStreams(nc);
        for (const { kind, metric } of CLUSTER_KINDS) {
          for (const runtimes of rotate(context.sizes.clusterRuntimes, context.round)) {
            await drainOnCluster(context, { cluster, nc, client }, { kind, stem: metric, replicas, runtimes });
          }
        }
      }
    } finally {
      await client?.close();
      await nc?.close();
      await cluster.stop();
    }
  },
};

/** Each metric's R3 figure as a ratio of its R1 figure. */
function clusterBaselines(sizes: BenchSizes): Record<string, string[]> {
  const baselines: Record<string, string[]> = {};
  for (const { metric } of CLUSTER_KINDS) {
    for (const runtimes of sizes.clusterRuntimes) {
      const rate = clusterMetric(metric, runtimes);
      for (const name of [rate, ...Object.values(CLUSTER_CPU).map((figure) => `${rate}: ${figure}`)]) {
        baselines[name] = [replicasLabel(1)];
      }
    }
  }
  return baselines;
}

interface ClusterConnection {
  cluster: NatsCluster;
  nc: NatsConnection;
  client: JetfnClient;
}

interface Drain {
  kind: JobKind;
  stem: string;
  replicas: number;
  runtimes: number;
}

/** The table the warm-up's insert jobs write to, so `bench_rows` and its audit rows hold the measured jobs only. */
const WARM_TABLE = "bench_warm_rows";

/**
 * One drain: `runtimes` runtimes started and idle; a warm-up drain of their first jobs (compiling
 * the job path, opening connections), then the measured one, its CPU read around it. The runtimes
 * stop and the outcome is checked.
 */
async function drainOnCluster(context: RoundContext, on: ClusterConnection, drain: Drain): Promise<void> {
  const { sizes, services } = context;
  const count = drain.kind === "noop" ? sizes.clusterNoopJobs : sizes.clusterInsertJobs;
  // Lower case only: the runtime's unrouted-jobs sweep takes upper-case job subjects as invalid names.
  const tag = `${drain.kind}-${context.round}-r${drain.replicas}-x${drain.runtimes}-${Date.now().toString(36)}`;
  const names = { warm: `cluster-warm-${tag}`, measured: `cluster-${tag}` };
  const contender = replicasLabel(drain.replicas);
  const label = `${contender}, ${drain.runtimes} runtime${drain.runtimes === 1 ? "" : "s"}`;
  const database = await services.jetfnDatabase(`jetfn_cluster_${drain.kind}`);
  const folder = await createFunctionsFolder();
  let children: RuntimeChildren | undefined;
  try {
    if (drain.kind === "insert") {
      await database.sql.unsafe(BENCH_TABLE_SQL);
      await database.sql.unsafe(BENCH_TABLE_SQL.replace("bench_rows", WARM_TABLE));
    }
    const started = performance.now();
    const runtimes = await startRuntimeChildren(drain.runtimes, {
      natsUrl: on.cluster.url,
      databaseUrl: database.url,
      functionsDir: folder.dir,
      replicas: drain.replicas,
    });
    children = runtimes;
    const readyMs = performance.now() - started;
    const replicated = await checkReplicas(on.nc, drain.replicas);
    context.check(label, "jobs stream replicated", replicated.ok, replicated.detail);
    const source = (table?: string): string =>
      drain.kind === "insert" ? insertFunctionSource(sizes.concurrency, table) : noopFunctionSource(sizes.concurrency);
    const load = { on, folder, children: runtimes, inFlight: sizes.enqueueInFlight };
    await fillAndDrain(load, { name: names.warm, source: source(WARM_TABLE), count: sizes.clusterWarmupJobs });
    await runtimes.nextPhase();
    const natsPids = on.cluster.nodes.flatMap((node) => (node.pid === undefined ? [] : [node.pid]));
    const measured = await fillAndDrain(load, { name: names.measured, source: source(), count }, () =>
      readAll(runtimes, database.name, natsPids),
    );
    // Let the runtimes finish what they hold, so the counts are final.
    await runtimes.stop();
    recordDrain(context, clusterMetric(drain.stem, drain.runtimes), contender, count, measured);
    for (const check of await checkJetfnJobs(database.sql, names.measured, drain.kind, count)) {
      context.check(label, check.label, check.ok, check.detail);
    }
    context.log(
      `${label}: ready in ${Math.round(readyMs)} ms, ${count} ${drain.kind} jobs filled in ${Math.round(measured.fillMs)} ms, drained in ${Math.round(measured.drainMs)} ms`,
    );
  } finally {
    await children?.stop();
    for (const name of Object.values(names)) {
      await removeFunction(on.nc, name).catch((error: unknown) =>
        context.log(`could not remove ${name}'s consumer and jobs: ${(error as Error).message}`),
      );
    }
    await database.drop();
    await folder.remove();
  }
}

interface Load {
  on: ClusterConnection;
  folder: FunctionsFolder;
  children: RuntimeChildren;
  inFlight: number;
}

interface Measured {
  fillMs: number;
  drainMs: number;
  /** CPU read just before the function's file is written and just after its last job. */
  before?: CpuReading;
  after?: CpuReading;
}

/**
 * Fills the queue of function `name` while the runtimes idle, then writes its file: each runtime
 * deploys it and they drain the queue together.
 */
async function fillAndDrain(
  load: Load,
  job: { name: string; source: string; count: number },
  readCpuNow: () => Promise<CpuReading | undefined> = async () => undefined,
): Promise<Measured> {
  const tag = job.name;
  let started = performance.now();
  await runPool(job.count, load.inFlight, (index) => load.on.client.enqueue(job.name, jobInput(tag, index)));
  const fillMs = performance.now() - started;
  const before = await readCpuNow();
  started = performance.now();
  await load.folder.write(job.name, job.source);
  const drainMs = await load.children.drain(job.count, drainTimeoutMs(job.count));
  const after = await readCpuNow();
  return { fillMs, drainMs, before, after };
}

/** CPU so far of the runtimes (as `node`), of Postgres for `database` and of the cluster's nodes. */
async function readAll(
  children: RuntimeChildren,
  database: string,
  natsPids: number[],
): Promise<CpuReading | undefined> {
  const [runtimesMs, servers] = await Promise.all([children.cpuMs(), readCpu({ database, natsPids })]);
  return runtimesMs === undefined || servers === undefined ? undefined : { ...servers, node: runtimesMs };
}

/** A drain's rate, and its CPU per job where it was read. */
function recordDrain(
  context: RoundContext,
  metric: string,
  contender: string,
  count: number,
  measured: Measured,
): void {
  context.record({ metric, contender, unit: "jobs/s", better: "higher", value: (count * 1000) / measured.drainMs });
  if (!measured.before || !measured.after) return;
  const cpu = cpuPerJob(measured.before, measured.after, count);
  const figures: Array<[string, string, number]> = [
    [CLUSTER_CPU.runtimes, "µs", cpu.nodeUs],
    [CLUSTER_CPU.postgres, "µs", cpu.serverUs.postgres],
    [CLUSTER_CPU.nats, "µs", cpu.serverUs["nats-server"]],
    [CLUSTER_CPU.busy, "%", cpu.busyPercent],
  ];
  for (const [figure, unit, value] of figures) {
    context.record({ metric: `${metric}: ${figure}`, contender, unit, better: "lower", value });
  }
}

/** Whether the jobs stream has `replicas` copies, the followers among them current (its leader's view). */
async function checkReplicas(nc: NatsConnection, replicas: number): Promise<{ ok: boolean; detail: string }> {
  const manager = await jetstreamManager(nc);
  const info = await manager.streams.info(resolveConfig({}).streamName);
  const followers = info.cluster?.replicas ?? [];
  const current = followers.filter((follower) => follower.current).length;
  return {
    ok: info.config.num_replicas === replicas && current === replicas - 1,
    detail: `${info.config.num_replicas} replica(s): leader ${info.cluster?.leader}, ${current} of ${followers.length} follower(s) current`,
  };
}

/** Deletes every stream (the jobs, events and the buckets), so the next runtime makes them at its replicas. */
async function deleteStreams(nc: NatsConnection): Promise<void> {
  const manager = await jetstreamManager(nc);
  const names: string[] = [];
  for await (const name of manager.streams.names()) names.push(name);
  for (const name of names) await manager.streams.delete(name);
}

/** Deletes a drained function's consumer and its jobs, so later drains start from the same stream. */
async function removeFunction(nc: NatsConnection, name: string): Promise<void> {
  const manager = await jetstreamManager(nc);
  const stream = resolveConfig({}).streamName;
  await manager.consumers.delete(stream, consumerName(name)).catch(() => false);
  await manager.streams.purge(stream, { filter: `${JOB_PREFIX}${name}` });
}
