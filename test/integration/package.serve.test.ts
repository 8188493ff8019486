import path from "node:path";
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from "vitest";
import { createTestDatabase, type TestDatabase } from "../helpers/database";
import { eventually } from "../helpers/environment";
import {
  appEnv,
  countComments,
  type InstalledApp,
  type InstalledRuntime,
  installedApp,
  mustRun,
  RESTART_JOBS,
  run,
  startInstalledRuntime,
  withServer,
} from "../helpers/installed-package";
import { startNatsServer, type TestNatsServer } from "../helpers/nats-server";
import { startPrivatePostgres } from "../helpers/private-postgres";

// The installed, compiled `jetfn start` (no tsx in the app) serving the app's functions through
// jetfn/client, and going on across Postgres failures. package.install.test.ts checks the install.

let installed: InstalledApp;
let app: string;
let nats: TestNatsServer;
let database: TestDatabase;
let runtime: InstalledRuntime | undefined;

beforeAll(async () => {
  [installed, nats, database] = await Promise.all([
    installedApp(),
    startNatsServer(),
    createTestDatabase({ empty: true }),
  ]);
  app = installed.app;
}, 300_000);

afterAll(async () => {
  await runtime?.stop();
  await database?.drop();
  await nats?.stop();
});

describe("the runtime installed from the packed tarball", () => {
  it("migrates, starts compiled, and serves the app's calls, jobs and waits through jetfn/client", async () => {
    const bin = path.join(app, "node_modules", ".bin", "jetfn");
    const env = appEnv({
      NATS_URL: nats.url,
      DATABASE_URL: database.url,
      JETFN_FUNCTIONS: path.join(app, "functions"),
      JETFN_SCHEMA: path.join(app, "schema.ts"),
      LOG_LEVEL: "info",
    });
    // jetfn's migrations, then the app's from drizzle/ (the default JETFN_MIGRATIONS), audited.
    const migrated = JSON.parse(await mustRun(bin, ["migrate", "--json"], app, env)) as { applied: string[] };
    expect(migrated.applied.at(-1)).toBe("app:0000_example_tables.sql");
    const [audited] = await database.sql`select count(*)::int as n from jetfn.unaudited_tables(array['public'])`;
    expect(audited?.n).toBe(0);
    const [post] = await database.sql`insert into posts (title) values ('installed') returning id`;
    await database.sql`insert into comments (post_id, author, body) values (${post?.id as number}, 'ada', 'hi')`;
    runtime = await startInstalledRuntime(app, env);
    const output = await mustRun(process.execPath, ["build/app.js"], app, appEnv({ NATS_URL: nats.url }));
    expect(JSON.parse(output)).toEqual({
      greeting: "hello call",
      isolated: "hello thread",
      waited: { greeting: "hello job" },
      status: "succeeded",
      both: "hello both",
      authors: ["ada"],
      refusedIsJetfnError: true,
      refusedCode: "E_FUNCTION_NOT_FOUND",
    });
  }, 120_000);

  it("the installed runtime keeps serving after its Postgres connections are killed (pg_terminate_backend)", async () => {
    // The runtime started by the test above, running the installed package's compiled code and driver.
    if (!runtime || runtime.child.exitCode !== null)
      throw new Error(`jetfn start is not running:\n${runtime?.output()}`);
    const terminate = async (): Promise<number> => {
      const rows = await database.sql<{ terminated: boolean }[]>`
        select pg_terminate_backend(pid) as terminated from pg_stat_activity
        where datname = current_database() and application_name = 'jetfn' and pid <> pg_backend_pid()`;
      return rows.filter((row) => row.terminated).length;
    };
    expect(await terminate()).toBeGreaterThan(0);
    // Calls and jobs after the kill: the first attempts may meet dead connections; jobs are held and
    // retried, calls are answered once the pool has reconnected.
    const output = await mustRun(process.execPath, ["build/app.js"], app, appEnv({ NATS_URL: nats.url }));
    expect(JSON.parse(output)).toMatchObject({
      waited: { greeting: "hello job" },
      both: "hello both",
      authors: ["ada"],
    });
    await terminate();
    const again = await mustRun(process.execPath, ["build/app.js"], app, appEnv({ NATS_URL: nats.url }));
    expect(JSON.parse(again)).toMatchObject({ status: "succeeded", authors: ["ada"] });
    expect(runtime.child.exitCode, runtime.output()).toBeNull();
    expect(runtime.output()).not.toMatch(/uncaught|unhandled/i);
  }, 180_000);

  it("the installed runtime keeps serving across a restart of its Postgres server, each job applied once", async () => {
    // A server of this test's own (the machine's shared one must keep running), and a NATS server of
    // its own, so that only this runtime serves these calls and jobs.
    const server = await startPrivatePostgres();
    onTestFinished(() => server.stop());
    const privateNats = await startNatsServer();
    const env = appEnv({
      NATS_URL: privateNats.url,
      DATABASE_URL: server.url,
      JETFN_FUNCTIONS: path.join(app, "functions"),
      JETFN_SCHEMA: path.join(app, "schema.ts"),
      LOG_LEVEL: "info",
    });
    await mustRun(path.join(app, "node_modules", ".bin", "jetfn"), ["migrate", "--json"], app, env);
    const postId = await withServer(server.url, async (sql) => {
      const [installed] = await sql`insert into posts (title) values ('installed') returning id`;
      await sql`insert into comments (post_id, author, body) values (${installed?.id as number}, 'ada', 'hi')`;
      const [target] = await sql`insert into posts (title) values ('restart') returning id`;
      return target?.id as number;
    });
    const restarted = await startInstalledRuntime(app, env);
    onTestFinished(() => restarted.stop());

    const jobs = run(
      process.execPath,
      ["restart-jobs.mjs"],
      app,
      appEnv({
        NATS_URL: privateNats.url,
        JOBS: String(RESTART_JOBS),
        POST_ID: String(postId),
      }),
    );
    // Restart once some jobs are applied and most are still to run.
    let appliedBefore = 0;
    await eventually(async () => {
      appliedBefore = await countComments(server.url, postId);
      return appliedBefore >= 10;
    }, 60_000);
    const pidBefore = await server.pid();
    // Down for longer than a waiting client's status poll (2 s), so the app's waits meet the outage.
    await server.restart({ downMs: 3_000 });
    expect(await server.pid()).not.toBe(pidBefore);
    expect(appliedBefore).toBeLessThan(RESTART_JOBS);

    const finished = await jobs;
    expect(finished.code, finished.stderr).toBe(0);
    const { ids, results } = JSON.parse(finished.stdout) as { ids: string[]; results: { n: number }[] };
    expect(results).toEqual(ids.map((_, n) => ({ n })));
    // Calls, jobs and waits from the app after the restart.
    const after = await mustRun(process.execPath, ["build/app.js"], app, appEnv({ NATS_URL: privateNats.url }));
    expect(JSON.parse(after)).toMatchObject({
      greeting: "hello call",
      isolated: "hello thread",
      waited: { greeting: "hello job" },
      status: "succeeded",
      both: "hello both",
      authors: ["ada"],
    });
    // Each acknowledged job applied once: one row per invocation id, none missing, none twice.
    const { authors, succeeded } = await withServer(server.url, async (sql) => {
      const rows = await sql<{ author: string }[]>`select author from comments where post_id = ${postId}`;
      const [done] = await sql<{ n: number }[]>`
        select count(*)::int as n from jetfn.invocations where function = 'add-comment' and status = 'succeeded'`;
      return { authors: rows.map((row) => row.author), succeeded: done?.n };
    });
    const counts = {
      rows: authors.length,
      distinct: new Set(authors).size,
      missing: ids.filter((id) => !authors.includes(id)).length,
      succeeded,
    };
    expect(counts).toEqual({ rows: RESTART_JOBS, distinct: RESTART_JOBS, missing: 0, succeeded: RESTART_JOBS });
    expect(restarted.child.exitCode, restarted.output()).toBeNull();
    expect(restarted.output()).not.toMatch(/uncaught|unhandled/i);
  }, 180_000);
});
