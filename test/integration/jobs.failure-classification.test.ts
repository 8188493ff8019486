import { afterAll, beforeAll, expect, it } from "vitest";
import { createTestEnvironment, eventually, type TestEnvironment } from "../helpers/environment";
import { freePort } from "../helpers/free-port";

// A job whose attempt lost jetfn's database runs again at once without spending an attempt; any
// other failure is the handler's and follows its retry policy. Which is which is decided by what the
// runtime saw of its own database, not by what the handler's error looks like.
let env: TestEnvironment;

beforeAll(async () => {
  env = await createTestEnvironment();
});

afterAll(async () => {
  await env?.close();
});

it("counts a handler's refused HTTP connection as a failed attempt, not as a database loss", {
  timeout: 90_000,
}, async () => {
  const runtime = await env.startRuntime();
  const starts: string[] = [];
  runtime.events.on("invocation:start", (event) => starts.push(event.invocationId));
  const client = await env.client();
  // Nobody listens on this port: fetch fails with ECONNREFUSED.
  const url = `http://127.0.0.1:${await freePort()}/`;
  const job = await client.enqueue("unreachable-service", { url });
  const view = await eventually(async () => {
    const status = await client.status(job.id);
    return status.status === "dead" ? status : undefined;
  }, 45_000).catch(() => client.status(job.id).catch(() => undefined));
  const ran = starts.filter((id) => id === job.id).length;
  await runtime.stop();
  expect({ status: view?.status, attempts: view?.attempts, ran }).toEqual({ status: "dead", attempts: 2, ran: 2 });
});
