import path from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { createTestEnvironment, FIXTURE_FUNCTIONS, type TestEnvironment } from "../helpers/environment";

// A handler with `isolation: "thread"` read the runtime's environment: DATABASE_URL (so it could
// write outside any invocation, as the runtime's role), the NATS passwords and the dashboard token.
// Now its thread gets the environment without them.
const ISOLATED_FUNCTIONS = path.resolve(FIXTURE_FUNCTIONS, "../isolated-functions");
const SECRETS = {
  DATABASE_URL: "postgres://jetfn_runtime:secret@db/app",
  PGPASSWORD: "secret",
  NATS_PASSWORD: "secret",
  JETFN_DASHBOARD_TOKEN: "secret",
  JETFN_RUNTIME_PASSWORD: "secret",
};
let env: TestEnvironment;
const saved: Record<string, string | undefined> = {};

beforeAll(async () => {
  env = await createTestEnvironment();
  for (const [name, value] of Object.entries(SECRETS)) {
    saved[name] = process.env[name];
    process.env[name] = value;
  }
});

afterAll(async () => {
  for (const [name, value] of Object.entries(saved)) {
    if (value === undefined) delete process.env[name];
    else process.env[name] = value;
  }
  await env?.close();
});

it("gives a handler thread no database URL, NATS credentials or jetfn secrets", { timeout: 90_000 }, async () => {
  await env.startRuntime({ functionsDir: ISOLATED_FUNCTIONS });
  const client = await env.client();
  expect(await client.call("env-probe", {})).toEqual([]);
});
