import { type ChildProcess, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { createRequire } from "node:module";
import { createConnection } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import postgres, { type Sql } from "postgres";
import { migrate } from "../runtime/db/migrate";
import { freePort } from "../runtime/support/free-port";
import { stopChild } from "../runtime/support/stop-child";
import { sleep, waitUntil } from "./stats";

/** Everything the benchmarks run against, started (and stopped) by the harness. */
export interface Services {
  readonly natsUrl: string;
  readonly natsPid: number | undefined;
  /** A database migrated for jetfn (audit triggers on), cloned from a template. */
  jetfnDatabase(label: string): Promise<BenchDatabase>;
  /** An empty database, for a peer to install its own schema in. */
  emptyDatabase(label: string): Promise<BenchDatabase>;
  /** Redis for BullMQ: 127.0.0.1:6379 if it answers, otherwise a redis-server started here. */
  redis(): Promise<{ host: string; port: number }>;
  /** Why BullMQ cannot run here, or undefined when it can. */
  readonly bullmqUnavailable: string | undefined;
  /** A NATS connection of the harness's own. */
  connectNats(name: string): Promise<NatsConnection>;
  readonly versions: Record<string, string>;
  close(): Promise<void>;
}

/** A database created for one contender in one round; dropped by `drop()` or at the end of the run. */
export interface BenchDatabase {
  readonly name: string;
  readonly url: string;
  /** A small pool for the harness's own queries (checks, setup). */
  readonly sql: Sql;
  drop(): Promise<void>;
}

/** Connection string of a Postgres role that may create databases. */
export function adminUrl(): string {
  return (
    process.env.JETFN_BENCH_DATABASE_URL ??
    process.env.JETFN_TEST_DATABASE_URL ??
    "postgres://postgres@127.0.0.1:5432/postgres"
  );
}

function urlFor(name: string): string {
  const url = new URL(adminUrl());
  url.pathname = `/${name}`;
  return url.toString();
}

/** Starts nats-server, a migrated template database, and checks what the peers need. */
export async function startServices(log: (message: string) => void): Promise<Services> {
  const nats = await startNatsServer();
  const admin = postgres(adminUrl(), { max: 1, onnotice: () => {} });
  const prefix = `jetfn_bench_${process.pid}_${Date.now().toString(36)}`;
  const created = new Set<string>();
  let counter = 0;
  let redis: RedisHandle | undefined;
  try {
    const template = `${prefix}_tpl`;
    await admin.unsafe(`create database ${template}`);
    created.add(template);
    const templateSql = postgres(urlFor(template), { max: 1, onnotice: () => {} });
    try {
      // The example app's tables too (drizzle/): the scenarios write into them.
      await migrate(templateSql, { appDirectory: fileURLToPath(new URL("../drizzle", import.meta.url)) });
    } finally {
      await templateSql.end();
    }
    const postgresVersion = ((await admin`show server_version`)[0] as { server_version: string }).server_version;
    const makeDatabase = async (label: string, from: string | undefined): Promise<BenchDatabase> => {
      const name = `${prefix}_${label.replace(/[^a-z0-9_]/g, "_")}_${counter++}`;
      await admin.unsafe(from ? `create database ${name} template ${from}` : `create database ${name}`);
      created.add(name);
      const url = urlFor(name);
      const sql = postgres(url, { max: 4, onnotice: () => {} });
      return {
        name,
        url,
        sql,
        async drop() {
          await sql.end({ timeout: 5 });
          // Peers' pools may still be closing; a forced drop would make them emit unhandled errors.
          await waitUntil(
            async () => {
              const [row] = await admin`select count(*)::int as sessions from pg_stat_activity where datname = ${name}`;
              return row?.sessions === 0;
            },
            `the sessions on ${name} to close`,
            5_000,
            50,
          ).catch(() => undefined);
          await admin.unsafe(`drop database if exists ${name} with (force)`);
          created.delete(name);
        },
      };
    };
    const bullmqUnavailable = checkBullmqDriver();
    return {
      natsUrl: nats.url,
      natsPid: nats.pid,
      jetfnDatabase: (label) => makeDatabase(label, template),
      emptyDatabase: (label) => makeDatabase(label, undefined),
      async redis() {
        redis ??= await ensureRedis(log);
        return { host: "127.0.0.1", port: redis.port };
      },
      bullmqUnavailable,
      connectNats: (name) => connect({ servers: nats.url, name }),
      versions: {
        node: process.version,
        "nats-server": nats.version,
        "Postgres server": postgresVersion,
        ...packageVersions(),
      },
      async close() {
        for (const name of created) {
          await admin.unsafe(`drop database if exists ${name} with (force)`).catch(() => undefined);
        }
        await admin.end({ timeout: 5 });
        await redis?.stop();
        await nats.stop();
      },
    };
  } catch (error) {
    for (const name of created) await admin.unsafe(`drop database if exists ${name} with (force)`).catch(() => {});
    await admin.end({ timeout: 5 });
    await nats.stop();
    throw error;
  }
}

/** BullMQ 6 loads its Redis driver (ioredis or node-redis) as an optional peer dependency. */
function checkBullmqDriver(): string | undefined {
  const require = createRequire(import.meta.url);
  for (const driver of ["ioredis", "redis"]) {
    try {
      require.resolve(driver);
      return undefined;
    } catch {
      // try the next driver
    }
  }
  return "bullmq 6 needs its Redis driver (the optional peer `ioredis` or `redis`), which is not installed";
}

const PACKAGES = [
  "@nats-io/transport-node",
  "@nats-io/jetstream",
  "postgres",
  "drizzle-orm",
  "graphile-worker",
  "pg-boss",
  "bullmq",
  "pg",
];

function packageVersions(): Record<string, string> {
  const versions: Record<string, string> = {};
  for (const name of PACKAGES) {
    try {
      // Read the file directly: some packages do not export their package.json.
      const file = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../node_modules", name, "package.json");
      versions[name] = (JSON.parse(readFileSync(file, "utf8")) as { version: string }).version;
    } catch {
      versions[name] = "not installed";
    }
  }
  return versions;
}

interface NatsHandle {
  url: string;
  pid: number | undefined;
  version: string;
  stop(): Promise<void>;
}

/** `nats-server -a 127.0.0.1 -p PORT -js -sd DIR` on a free port and a temporary store. */
async function startNatsServer(): Promise<NatsHandle> {
  const port = await freePort();
  const storeDir = await mkdtemp(path.join(tmpdir(), "jetfn-bench-nats-"));
  const child = spawn("nats-server", ["-a", "127.0.0.1", "-p", String(port), "-js", "-sd", storeDir], {
    stdio: "ignore",
  });
  const stop = async (): Promise<void> => {
    await stopChild(child);
    await rm(storeDir, { recursive: true, force: true });
  };
  stopOnExit(child);
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`nats-server exited with code ${child.exitCode}`);
    try {
      const probe = await connect({ servers: `127.0.0.1:${port}`, reconnect: false, timeout: 500 });
      const version = probe.info?.version ?? "unknown";
      await probe.close();
      return { url: `nats://127.0.0.1:${port}`, pid: child.pid, version, stop };
    } catch (error) {
      if (Date.now() > deadline) {
        await stop();
        throw new Error(`nats-server did not answer on port ${port}: ${(error as Error).message}`);
      }
      await sleep(50);
    }
  }
}

interface RedisHandle {
  port: number;
  stop(): Promise<void>;
}

async function ensureRedis(log: (message: string) => void): Promise<RedisHandle> {
  if (await redisAnswers(6379)) return { port: 6379, stop: async () => {} };
  const port = await freePort();
  log(`Redis is not answering on 6379; starting redis-server on ${port}.`);
  const child = spawn(
    "redis-server",
    ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
    {
      stdio: "ignore",
    },
  );
  stopOnExit(child);
  const deadline = Date.now() + 10_000;
  while (!(await redisAnswers(port))) {
    if (child.exitCode !== null || Date.now() > deadline) {
      await stopChild(child);
      throw new Error(`redis-server did not answer on port ${port}`);
    }
    await sleep(50);
  }
  return { port, stop: () => stopChild(child) };
}

function redisAnswers(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host: "127.0.0.1", port });
    const finish = (answer: boolean): void => {
      socket.destroy();
      resolve(answer);
    };
    socket.setTimeout(500, () => finish(false));
    socket.once("error", () => finish(false));
    socket.once("connect", () => socket.write("PING\r\n"));
    socket.once("data", (data) => finish(data.toString().startsWith("+PONG")));
  });
}

/** If this process dies (even of an uncaught error), its child dies with it instead of lingering. */
function stopOnExit(child: ChildProcess): void {
  const kill = (): void => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
  };
  process.once("exit", kill);
  child.once("exit", () => process.off("exit", kill));
}
