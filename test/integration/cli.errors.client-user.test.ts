import { afterAll, beforeAll, expect, it } from "vitest";
import { runCli } from "../helpers/cli";
import { createTestEnvironment, type TestEnvironment } from "../helpers/environment";
import { CLIENT_PASSWORD, shippedNatsAuth } from "../helpers/shipped-nats-auth";

// An application's NATS user (jetfn-client in the shipped nats.auth.conf) may not read the jobs
// stream nor ask the services protocol: the CLI's extra look-ups must then stay silent, not guess.
let env: TestEnvironment;
let clientEnv: NodeJS.ProcessEnv;

beforeAll(async () => {
  env = await createTestEnvironment(await shippedNatsAuth());
  await env.startRuntime({}, { laterTestsUseIt: true });
  clientEnv = { NATS_URL: env.nats.url, NATS_USER: "jetfn-client", NATS_PASSWORD: CLIENT_PASSWORD };
}, 90_000);

afterAll(async () => {
  await env?.close();
});

it("status of an unknown id stays pending for a user that cannot read the stream", async () => {
  const status = await runCli(["status", "no-such-invocation-id", "--json"], clientEnv);
  expect(status).toMatchObject({ code: 0, stderr: "" });
  expect(JSON.parse(status.stdout)).toMatchObject({ status: "pending" });
});

it("enqueue does not warn when it cannot ask which runtimes serve the function", async () => {
  const enqueued = await runCli(["enqueue", "add", '{"a": 1, "b": 2}', "--wait"], clientEnv);
  expect(enqueued.code).toBe(0);
  expect(enqueued.stderr.trim().split("\n")).toHaveLength(1);
  expect(JSON.parse(enqueued.stdout)).toEqual({ sum: 3 });
});
