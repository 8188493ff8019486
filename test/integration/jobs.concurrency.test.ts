import { afterAll, beforeAll, expect, it } from "vitest";
import { createTestEnvironment, eventually, type TestEnvironment } from "../helpers/environment";

let env: TestEnvironment;

beforeAll(async () => {
  env = await createTestEnvironment();
  await env.startRuntime();
});

afterAll(async () => {
  await env?.close();
});

interface Counter {
  running: number;
  max: number;
  done: number;
}

it("never runs more invocations of a function at once than its concurrency, jobs and calls together", async () => {
  const client = await env.client();
  const jobs = Array.from({ length: 12 }, () => client.enqueue("count-concurrency", { ms: 150 }));
  const calls = Array.from({ length: 4 }, () => client.call("count-concurrency", { ms: 150 }));
  await Promise.all([...jobs, ...calls]);
  const counter = await eventually(() => {
    const value = (globalThis as { __jetfnConcurrency?: Counter }).__jetfnConcurrency;
    return value && value.done === 16 ? value : undefined;
  });
  // count-concurrency declares concurrency: 2.
  expect(counter.max).toBe(2);
  expect(counter.running).toBe(0);
});
