import { access, chmod, mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { connect } from "@nats-io/transport-node";
import { afterAll, beforeAll, expect, it } from "vitest";
import { type CliProcess, runCli, spawnCli } from "../helpers/cli";
import { createTestDatabase } from "../helpers/database";
import { FIXTURE_FUNCTIONS } from "../helpers/environment";
import { freePort } from "../helpers/free-port";

let cwd: string;
let dev: CliProcess;
let cliEnv: NodeJS.ProcessEnv;

beforeAll(async () => {
  cwd = await mkdtemp(path.join(tmpdir(), "jetfn-dev-"));
  // The embedded Postgres runs as the `postgres` user when tests run as root: it must enter cwd.
  await chmod(cwd, 0o755);
  const port = await freePort();
  // No DATABASE_URL and nothing listening at NATS_URL: dev must bring up both itself.
  cliEnv = { NATS_URL: `nats://127.0.0.1:${port}`, DATABASE_URL: "", JETFN_FUNCTIONS: FIXTURE_FUNCTIONS };
  dev = spawnCli(["dev"], cliEnv, { cwd });
  await dev.waitFor("Runtime ready", 100_000);
}, 120_000);

afterAll(async () => {
  // SIGTERM, not SIGKILL: dev stops the nats-server and Postgres it started (even while starting).
  await dev?.stop("SIGTERM");
  await rm(cwd, { recursive: true, force: true });
});

it("dev starts an embedded Postgres and a local nats-server, serves, and stops both on Ctrl-C", async () => {
  expect(dev.output()).toContain("Started a local nats-server.");
  expect(dev.output()).toContain("Using the embedded Postgres.");
  expect(dev.output()).toContain("Using the database 127.0.0.1:");
  const call = await runCli(["call", "add", '{"a": 1, "b": 2}'], cliEnv);
  expect(JSON.parse(call.stdout)).toEqual({ sum: 3 });
  // Other commands find the embedded database while dev runs.
  const enqueued = await runCli(["enqueue", "add", '{"a": 5, "b": 5}', "--wait"], cliEnv);
  expect(JSON.parse(enqueued.stdout)).toEqual({ sum: 10 });

  expect(await dev.stop("SIGINT")).toBe(0);
  expect(dev.output()).toContain("Runtime stopped.");
  await expect(connect({ servers: cliEnv.NATS_URL, reconnect: false, timeout: 1_000 })).rejects.toThrow();
  await expect(access(path.join(cwd, ".jetfn/postgres/postmaster.pid"))).rejects.toThrow();
}, 60_000);

it("dev names the fix when no NATS answers and nats-server is not installed", async () => {
  const port = await freePort();
  const result = await runCli(
    ["dev"],
    { ...cliEnv, NATS_URL: `nats://127.0.0.1:${port}`, PATH: path.dirname(process.execPath), NATS_SERVER_BIN: "" },
    { cwd },
  );
  expect(result.code).not.toBe(0);
  expect(result.stderr).toContain(
    "`nats-server` is not installed: install it (Debian: apt install nats-server) or set NATS_URL",
  );
});

it("dev starts the nats-server NATS_SERVER_BIN names, and says so when it is missing", async () => {
  const port = await freePort();
  const missing = path.join(cwd, "no-such-dir", "nats-server-custom");
  const result = await runCli(
    ["dev"],
    { ...cliEnv, NATS_URL: `nats://127.0.0.1:${port}`, NATS_SERVER_BIN: missing },
    { cwd },
  );
  expect(result.code).not.toBe(0);
  expect(result.stderr).toContain(`\`${missing}\` is not installed`);
});

it("a signal while dev is still starting stops the nats-server it started", async () => {
  const database = await createTestDatabase();
  const port = await freePort();
  const natsUrl = `nats://127.0.0.1:${port}`;
  // A database is named, so dev starts only nats-server; deploying every fixture function takes
  // seconds, so the signal lands while the runtime is starting.
  const starting = spawnCli(["dev"], { ...cliEnv, NATS_URL: natsUrl, DATABASE_URL: database.url }, { cwd });
  try {
    await starting.waitFor("Started a local nats-server.");
    expect(starting.output()).not.toContain("Runtime ready");
    await starting.stop("SIGTERM");
    // Before, the runtime's own handlers were not there yet: dev died and its nats-server ran on.
    await expect(connect({ servers: natsUrl, reconnect: false, timeout: 1_000 })).rejects.toThrow();
  } finally {
    await starting.stop("SIGKILL");
    await database.drop();
  }
});

it("a signal while dev's embedded Postgres is starting stops that Postgres once it is up", async () => {
  const fresh = await mkdtemp(path.join(tmpdir(), "jetfn-dev-starting-"));
  await chmod(fresh, 0o755);
  const pidFile = path.join(fresh, ".jetfn/postgres/postmaster.pid");
  const env = { ...cliEnv, NATS_URL: `nats://127.0.0.1:${await freePort()}` };
  const starting = spawnCli(["dev"], env, { cwd: fresh });
  try {
    // The server writes its pid file as it starts, before pg_ctl sees it ready: the signal lands
    // while the start is under way, before dev has said it is using it.
    const deadline = Date.now() + 90_000;
    while (!(await exists(pidFile))) {
      if (Date.now() > deadline) throw new Error(`no ${pidFile} within 90 s:\n${starting.output()}`);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    await starting.stop("SIGTERM");
    // Before, it was not yet among the started services: dev exited and the server ran on.
    expect(await exists(pidFile), starting.output()).toBe(false);
  } finally {
    await starting.stop("SIGKILL");
    await stopLeftPostgres(pidFile);
    await rm(fresh, { recursive: true, force: true });
  }
}, 120_000);

function exists(file: string): Promise<boolean> {
  return access(file).then(
    () => true,
    () => false,
  );
}

/** Stops a server the test would otherwise leave behind (its postmaster's own pid, never by name). */
async function stopLeftPostgres(pidFile: string): Promise<void> {
  const pid = Number((await readFile(pidFile, "utf8").catch(() => "")).split("\n")[0]);
  if (!pid) return;
  try {
    process.kill(pid, "SIGQUIT");
  } catch {
    return;
  }
  await new Promise((resolve) => setTimeout(resolve, 1_000));
}
