import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type CliProcess, runCli, spawnCli } from "../helpers/cli";
import { createTestEnvironment, FIXTURE_FUNCTIONS, type TestEnvironment } from "../helpers/environment";

// Secrets never reach a log line of `jetfn start`: not the DATABASE_URL password, not the NATS
// password (given as NATS_PASSWORD or inside NATS_URL), in normal running, at debug level, through a
// NATS restart, or in start-up failures.
const NATS_PASSWORD = `nats-Secret-${process.pid}`;
const DB_PASSWORD = `db-Secret-${process.pid}`;

let env: TestEnvironment;
let runtime: CliProcess;
let cliEnv: NodeJS.ProcessEnv;

/** The test database URL with a password in it (the test Postgres trusts loopback, so it is accepted). */
function withPassword(url: string): string {
  const parsed = new URL(url);
  parsed.password = DB_PASSWORD;
  return parsed.toString();
}

beforeAll(async () => {
  const config = `authorization { users = [ { user: runtime, password: "${NATS_PASSWORD}" } ] }`;
  env = await createTestEnvironment({ config, user: "runtime", password: NATS_PASSWORD });
  cliEnv = {
    NATS_URL: env.nats.url,
    NATS_USER: "runtime",
    NATS_PASSWORD,
    DATABASE_URL: withPassword(env.database.url),
    JETFN_FUNCTIONS: FIXTURE_FUNCTIONS,
    LOG_LEVEL: "debug",
  };
  runtime = spawnCli(["start"], cliEnv);
  await runtime.waitFor("Runtime ready", 60_000);
}, 90_000);

afterAll(async () => {
  await runtime?.stop();
  await env?.close();
});

function expectNoSecret(output: string): void {
  expect(output).not.toContain(NATS_PASSWORD);
  expect(output).not.toContain(DB_PASSWORD);
  expect(output).not.toContain(encodeURIComponent(DB_PASSWORD));
}

describe("secrets in logs", () => {
  it("never appear while running, failing, and reconnecting", async () => {
    await runCli(["call", "add", '{"a": "x"}'], cliEnv);
    await runCli(["call", "boom", "{}"], cliEnv);
    await env.nats.restart();
    await runtime.waitFor("Reconnected to NATS", 30_000);
    await runtime.stop();
    const output = runtime.output();
    expect(output).toContain("Runtime stopped");
    expectNoSecret(output);
  }, 90_000);

  it("never appear when start-up fails, with the password in NATS_URL or DATABASE_URL", async () => {
    const inUrl = new URL(env.nats.url);
    inUrl.username = "runtime";
    inUrl.password = `${NATS_PASSWORD}-wrong`;
    const natsRefused = await runCli(["start"], { ...cliEnv, NATS_URL: inUrl.toString(), NATS_PASSWORD: "" });
    expect(natsRefused.code).not.toBe(0);
    expectNoSecret(natsRefused.stdout + natsRefused.stderr);
    const unreachable = new URL(withPassword(env.database.url));
    unreachable.port = "1";
    const databaseRefused = await runCli(["start"], { ...cliEnv, DATABASE_URL: unreachable.toString() });
    expect(databaseRefused.code).not.toBe(0);
    expect(databaseRefused.stderr).toContain("E_DATABASE_UNAVAILABLE");
    expectNoSecret(databaseRefused.stdout + databaseRefused.stderr);
  }, 90_000);
});
