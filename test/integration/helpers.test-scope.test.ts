import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Runtime } from "../../runtime/runtime";
import { createTestDatabase, type TestDatabase } from "../helpers/database";
import { createTestEnvironment, type TestEnvironment } from "../helpers/environment";

// What a test starts through the helpers stops when that test ends, also when it fails: a runtime
// left running by a failed test takes the jobs of the tests after it and fails them too.

let env: TestEnvironment;
let leftRuntime: Runtime | undefined;
let leftDatabase: TestDatabase | undefined;
let sharedRuntime: Runtime | undefined;

beforeAll(async () => {
  env = await createTestEnvironment();
});

afterAll(async () => {
  await env?.close();
});

async function databaseExists(name: string): Promise<boolean> {
  const rows = await env.database.sql`select 1 from pg_database where datname = ${name}`;
  return rows.length === 1;
}

describe("test-scoped helpers", () => {
  it.fails("(fails on purpose after starting a runtime and a database)", async () => {
    leftRuntime = await env.startRuntime();
    leftDatabase = await createTestDatabase();
    sharedRuntime = await env.startRuntime({}, { laterTestsUseIt: true });
    throw new Error("this test fails on purpose");
  });

  it("finds what the failed test started stopped, except what it kept for later tests", async () => {
    expect(leftRuntime?.nats.isClosed()).toBe(true);
    expect(await databaseExists(leftDatabase?.name as string)).toBe(false);
    expect(sharedRuntime?.nats.isClosed()).toBe(false);
  });
});
