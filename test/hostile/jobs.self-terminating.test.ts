import { afterAll, beforeAll, expect, it } from "vitest";
import { createTestEnvironment, eventually, type TestEnvironment } from "../helpers/environment";

// A job whose attempt lost its database connection runs again without spending an attempt: the
// database went away, not the job. A handler that ends its own session makes that happen on every
// run; it may be run again a few times, but then its attempts count like any failure's, and it
// ends dead instead of running (and killing the shared transactions it joins) forever.
let env: TestEnvironment;

beforeAll(async () => {
  env = await createTestEnvironment();
});

afterAll(async () => {
  await env?.close();
});

it("ends a job whose handler keeps killing its own session, within a bounded number of runs", {
  timeout: 90_000,
}, async () => {
  const runtime = await env.startRuntime();
  const starts: string[] = [];
  runtime.events.on("invocation:start", (event) => starts.push(event.invocationId));
  const client = await env.client();
  const job = await client.enqueue("self-terminating", {});
  const view = await eventually(async () => {
    const status = await client.status(job.id);
    return status.status === "dead" ? status : undefined;
  }, 45_000).catch(() => client.status(job.id).catch(() => undefined));
  const ran = starts.filter((id) => id === job.id).length;
  await runtime.stop();
  expect({
    status: view?.status,
    attempts: view?.attempts,
    code: (view?.error as { code?: string } | null | undefined)?.code,
  }).toEqual({
    status: "dead",
    attempts: 2,
    code: "E_DATABASE_UNAVAILABLE",
  });
  // Each of the 2 attempts ran once and then at most its allowance of reruns after a lost connection.
  expect(ran).toBeLessThanOrEqual(2 * 11);
});
