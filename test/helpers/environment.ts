import path from "node:path";
import { fileURLToPath } from "node:url";
import { type Runtime, type StartRuntimeOptions, startRuntime } from "../../runtime/runtime";
import { createClient, type JetfnClient } from "../../runtime/sdk/client";
import { createTestDatabase, type TestDatabase } from "./database";
import { type CapturedLogger, captureLogs } from "./logs";
import { startNatsServer, type TestNatsOptions, type TestNatsServer } from "./nats-server";
import { stopWhenTestEnds, type TestScope } from "./test-scope";

/** The fixture functions shared by the integration tests. */
export const FIXTURE_FUNCTIONS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../fixtures/functions");
/** The two fixture functions the cluster fault tests use (`add`, `fault-insert`), and nothing else. */
export const CLUSTER_FUNCTIONS = path.resolve(
  path.dirname(fileURLToPath(import.meta.url)),
  "../fixtures/cluster-functions",
);

/**
 * Starts a runtime on the cluster fixture functions (the tests that put a proxy between it and NATS),
 * with a short shutdown grace and no production checks; it stops when the test ends.
 */
export async function startClusterFunctionsRuntime(
  options: StartRuntimeOptions & Required<Pick<StartRuntimeOptions, "natsUrl" | "databaseUrl">>,
): Promise<Runtime> {
  const runtime = await startRuntime({
    functionsDir: CLUSTER_FUNCTIONS,
    shutdownGrace: "2s",
    databasePoolSize: 8,
    productionChecks: false,
    ...options,
  });
  stopWhenTestEnds(() => runtime.stop());
  return runtime;
}

/** A nats-server and a database of this test file's own, plus what it started on them. */
export interface TestEnvironment {
  readonly nats: TestNatsServer;
  readonly database: TestDatabase;
  /**
   * Starts a runtime on this environment. Started inside a test, it stops when that test ends,
   * passed or failed, unless `scope.laterTestsUseIt`; close() stops it at the latest.
   */
  startRuntime(options?: StartRuntimeOptions, scope?: TestScope): Promise<Runtime & { logs: CapturedLogger }>;
  /** A client connected to this environment's NATS (closed when the test that made it ends, or by close()). */
  client(): Promise<JetfnClient>;
  close(): Promise<void>;
}

/** Starts NATS and a database for one test file. */
export async function createTestEnvironment(natsOptions: TestNatsOptions = {}): Promise<TestEnvironment> {
  const [nats, database] = await Promise.all([startNatsServer(natsOptions), createTestDatabase()]);
  const runtimes: Runtime[] = [];
  const clients: JetfnClient[] = [];
  return {
    nats,
    database,
    async startRuntime(options = {}, scope = {}) {
      const logs = captureLogs();
      const runtime = await startRuntime({
        natsUrl: nats.url,
        natsUser: natsOptions.user,
        natsPassword: natsOptions.password,
        databaseUrl: database.url,
        functionsDir: FIXTURE_FUNCTIONS,
        logger: logs.logger,
        shutdownGrace: "5s",
        databasePoolSize: 8,
        ...options,
      });
      runtimes.push(runtime);
      if (!scope.laterTestsUseIt) stopWhenTestEnds(() => runtime.stop());
      return Object.assign(runtime, { logs });
    },
    async client() {
      const client = await createClient({
        natsUrl: nats.url,
        natsUser: natsOptions.user,
        natsPassword: natsOptions.password,
      });
      clients.push(client);
      // The test may have closed it already (drain refuses a closed connection).
      stopWhenTestEnds(async () => {
        if (!client.connection.isClosed()) await client.close();
      });
      return client;
    },
    async close() {
      await Promise.allSettled(clients.map((client) => client.close()));
      await Promise.allSettled(runtimes.map((runtime) => runtime.stop()));
      await Promise.allSettled([nats.stop(), database.drop()]);
    },
  };
}

/** Polls `check` until it returns a value other than undefined/false, or fails after `timeoutMs`. */
export async function eventually<T>(
  check: () => Promise<T | undefined | false> | T | undefined | false,
  timeoutMs = 10_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined && value !== false) return value as T;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) {
      throw new Error(`condition not met within ${timeoutMs}ms${last ? `: ${(last as Error).message}` : ""}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
