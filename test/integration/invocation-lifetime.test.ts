import { afterAll, beforeAll, beforeEach, expect, it } from "vitest";
import { createTestEnvironment, eventually, type TestEnvironment } from "../helpers/environment";

let env: TestEnvironment;
const late = globalThis as { __jetfnLateQuery?: string };

beforeAll(async () => {
  env = await createTestEnvironment();
  await env.startRuntime();
});

afterAll(async () => {
  await env?.close();
});

beforeEach(() => {
  delete late.__jetfnLateQuery;
});

it.each([
  ["never touched the database", false],
  ["had its own transaction", true],
])("refuses a query a handler makes after its invocation ended (it %s)", async (_case, touchFirst) => {
  const client = await env.client();
  await expect(client.call("late-query", { touchFirst })).resolves.toBeNull();
  const outcome = await eventually(() => late.__jetfnLateQuery);
  expect(outcome).toContain("the invocation already ended");
});
