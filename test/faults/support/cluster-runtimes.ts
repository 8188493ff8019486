import { type JetStreamClient, jetstream } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll } from "vitest";
import { type CliProcess, spawnCli } from "../../helpers/cli";
import { createTestDatabase, type TestDatabase } from "../../helpers/database";
import { CLUSTER_FUNCTIONS } from "../../helpers/environment";
import { startNatsCluster, type TestNatsCluster, type TestNatsClusterOptions } from "../../helpers/nats-cluster";

/** A 3-node NATS cluster, a database and `jetfn start` runtimes with R3 streams on them. */
export interface ClusterRuntimes {
  readonly cluster: TestNatsCluster;
  readonly database: TestDatabase;
  /** The environment every runtime gets (NATS_URL lists every node). */
  readonly cliEnv: NodeJS.ProcessEnv;
  /** Runtimes started so far, in start order. */
  readonly runtimes: CliProcess[];
  /** Spawns one more `jetfn start` (env on top of cliEnv) and waits until it is ready. */
  spawnRuntime(extraEnv?: NodeJS.ProcessEnv): Promise<CliProcess>;
  /** A connection of the test's own to every node, reconnecting without end. */
  readonly nc: NatsConnection;
  readonly js: JetStreamClient;
}

/** Options of useClusterRuntimes. */
export interface ClusterRuntimesOptions {
  /** Runtimes started before the tests, one after another. @default 2 */
  runtimes?: number;
  /** Env of runtime `index` on top of cliEnv (a NATS_URL of its own, for example). */
  runtimeEnv?: (index: number, cluster: TestNatsCluster) => NodeJS.ProcessEnv | Promise<NodeJS.ProcessEnv>;
  /** Options of the cluster. */
  cluster?: TestNatsClusterOptions;
}

/**
 * For a test file: the cluster, `fault_rows` (the table fault-insert writes) and the runtimes, made
 * before the file's tests and stopped after them (the runtimes by their own pids). The first runtime
 * creates the R3 streams, the others find them. Returns a getter, valid once the tests run.
 */
export function useClusterRuntimes(options: ClusterRuntimesOptions = {}): () => ClusterRuntimes {
  let made: ClusterRuntimes | undefined;
  const runtimes: CliProcess[] = [];
  let nc: NatsConnection | undefined;
  let cluster: TestNatsCluster | undefined;
  let database: TestDatabase | undefined;
  beforeAll(async () => {
    [cluster, database] = await Promise.all([startNatsCluster(options.cluster), createTestDatabase()]);
    await database.sql`
      create table fault_rows (id bigserial primary key, n int not null, invocation text not null, attempt int not null)`;
    nc = await connect({
      servers: cluster.nodes.map((node) => node.url),
      maxReconnectAttempts: -1,
      reconnectTimeWait: 250,
    });
    const cliEnv: NodeJS.ProcessEnv = {
      NATS_URL: cluster.url,
      DATABASE_URL: database.url,
      JETFN_FUNCTIONS: CLUSTER_FUNCTIONS,
      JETFN_REPLICAS: "3",
      LOG_LEVEL: "info",
      JETFN_SHUTDOWN_GRACE: "3s",
      JETFN_DB_POOL: "10",
    };
    const spawnRuntime = async (extraEnv: NodeJS.ProcessEnv = {}): Promise<CliProcess> => {
      const runtime = spawnCli(["start"], { ...cliEnv, ...extraEnv }, { laterTestsUseIt: true });
      runtimes.push(runtime);
      await runtime.waitFor("Runtime ready", 90_000);
      return runtime;
    };
    const started = cluster;
    for (let index = 0; index < (options.runtimes ?? 2); index++) {
      await spawnRuntime((await options.runtimeEnv?.(index, started)) ?? {});
    }
    made = { cluster, database, cliEnv, runtimes, spawnRuntime, nc, js: jetstream(nc) };
  }, 240_000);
  afterAll(async () => {
    await Promise.allSettled(runtimes.map((runtime) => runtime.stop("SIGKILL")));
    await nc?.close().catch(() => {});
    await cluster?.stop();
    await database?.drop();
  }, 60_000);
  return () => made as ClusterRuntimes;
}

/** Succeeded fault-insert jobs, as jetfn.invocations records them. */
export async function countSucceeded(database: TestDatabase): Promise<number> {
  const [row] = await database.sql<{ succeeded: number }[]>`
    select count(*)::int as succeeded from jetfn.invocations where function = 'fault-insert' and status = 'succeeded'`;
  return row?.succeeded ?? 0;
}

/** Whether a runtime process still runs. */
export function isAlive(runtime: CliProcess): boolean {
  return runtime.child.exitCode === null && runtime.child.signalCode === null;
}

/**
 * From now until `expected` fault-insert jobs have succeeded (or `timeoutMs` passed): how long that
 * took, and the longest time the succeeded count stood still, sampled every 100 ms.
 */
export async function drainWithStalls(
  database: TestDatabase,
  expected: number,
  timeoutMs: number,
): Promise<{ succeeded: number; drainedMs: number; longestStallMs: number }> {
  const started = Date.now();
  const deadline = started + timeoutMs;
  let last = -1;
  let lastChange = started;
  let longestStallMs = 0;
  for (;;) {
    const succeeded = await countSucceeded(database);
    const now = Date.now();
    if (succeeded !== last) {
      longestStallMs = Math.max(longestStallMs, now - lastChange);
      [last, lastChange] = [succeeded, now];
    }
    if (succeeded >= expected || now > deadline) return { succeeded, drainedMs: now - started, longestStallMs };
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}
