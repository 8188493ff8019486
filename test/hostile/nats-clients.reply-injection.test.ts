import { randomUUID } from "node:crypto";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, expect, it } from "vitest";
import { createClient, type JetfnClient } from "../../runtime/sdk/client";
import { runCli } from "../helpers/cli";
import { createTestEnvironment, eventually, type TestEnvironment } from "../helpers/environment";
import { CLIENT_PASSWORD, shippedNatsAuth } from "../helpers/shipped-nats-auth";

// Against the shipped nats.auth.conf: a client user names a reply subject the runtime or the
// server would act on ($JS.API.STREAM.PURGE.JETFN_JOBS, jetfn.done.<someone's job>). The answer
// (the runtime's, or JetStream's PubAck) must never purge the jobs stream or announce another
// client's job as done.
const PURGE = "$JS.API.STREAM.PURGE.JETFN_JOBS";
const PARKED = 5;

let env: TestEnvironment;
let client: JetfnClient;
let attacker: NatsConnection;
let runtimeSide: NatsConnection;

beforeAll(async () => {
  env = await createTestEnvironment(await shippedNatsAuth());
  await env.database.sql`create table items (id serial primary key, name text not null, attempt int, invocation text)`;
  // The runtime creates the stream; jobs for a function nobody deploys stay in it.
  const runtime = await env.startRuntime();
  await runtime.stop();
  client = await clientUser();
  for (let index = 0; index < PARKED; index++) await client.enqueue("parked", { index });
  attacker = await connect({ servers: env.nats.url, user: "jetfn-client", pass: CLIENT_PASSWORD });
  runtimeSide = await connect({
    servers: env.nats.url,
    user: "jetfn-runtime",
    pass: process.env.JETFN_RUNTIME_PASSWORD,
  });
});

afterAll(async () => {
  await client?.close();
  await attacker?.close();
  await runtimeSide?.close();
  await env?.close();
});

function clientUser(): Promise<JetfnClient> {
  return createClient({ natsUrl: env.nats.url, natsUser: "jetfn-client", natsPassword: CLIENT_PASSWORD });
}

async function storedJobs(): Promise<number> {
  const manager = await jetstreamManager(runtimeSide);
  return (await manager.streams.info("JETFN_JOBS")).state.messages;
}

/** Watches the stream for a while after an attack: a purge shows as fewer messages. */
async function expectNoPurge(atLeast: number): Promise<void> {
  const until = Date.now() + 1_500;
  while (Date.now() < until) {
    expect(await storedJobs()).toBeGreaterThanOrEqual(atLeast);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

it("keeps the jobs stream when a job's PubAck is sent to the purge API, with no runtime running", async () => {
  const before = await storedJobs();
  expect(before).toBe(PARKED);
  attacker.publish("fn.job.x", "{}", { reply: PURGE });
  await attacker.flush();
  // JetStream stores and acknowledges in order: once this job's PubAck is back, the attack's went out.
  await client.enqueue("parked", { index: "after" });
  await expectNoPurge(before + 2);
});

it("keeps the jobs stream when the runtime's answers are sent to the purge API", { timeout: 60_000 }, async () => {
  const runtime = await env.startRuntime();
  const before = await storedJobs();
  attacker.publish("jetfn.api.status", JSON.stringify({ id: "x1234567" }), { reply: PURGE });
  attacker.publish("fn.call.add", JSON.stringify({ a: 1, b: 2 }), { reply: PURGE });
  attacker.publish("fn.call.no-such-function", "{}", { reply: PURGE });
  attacker.publish("fn.job.x", "{}", { reply: PURGE });
  await attacker.flush();
  // The same requests with an inbox are still answered, as the client user.
  expect((await client.status("x1234567")).status).toBe("pending");
  expect(await client.call("add", { a: 1, b: 2 })).toEqual({ sum: 3 });
  await runtime.nats.flush();
  await expectNoPurge(before + 1);
});

it("never lets a client's request make the runtime announce another client's job as done", {
  timeout: 60_000,
}, async () => {
  await env.startRuntime();
  const victim = await clientUser();
  const id = `victim-${randomUUID()}`;
  const announced: string[] = [];
  const notices = runtimeSide.subscribe(`jetfn.done.${id}`, {
    callback: (_error, message) => {
      announced.push(message.string());
    },
  });
  await runtimeSide.flush();
  const job = await victim.enqueue("sleep", { ms: 100 }, { id });
  const forged = `jetfn.done.${job.id}`;
  attacker.publish("jetfn.api.status", JSON.stringify({ id: job.id }), { reply: forged });
  attacker.publish("fn.call.add", JSON.stringify({ a: 1, b: 2 }), { reply: forged });
  attacker.publish("fn.job.parked", "{}", { reply: forged });
  await attacker.flush();
  // The waiter learns the outcome from the job's record, whatever reaches its done subject.
  expect(await victim.result(job.id, { timeout: "30s" })).toEqual({ slept: 100 });
  await eventually(() => announced.length > 0, 15_000);
  await runtimeSide.flush();
  notices.unsubscribe();
  // Only the runtime's own notice, after the job ended, was published in the runtimes' account.
  expect(announced).toHaveLength(1);
  expect(JSON.parse(announced[0] as string)).toMatchObject({ id: job.id, status: "succeeded" });
  await victim.close();
});

it("still serves the client user: calls, jobs, status and `jetfn enqueue --wait`", { timeout: 90_000 }, async () => {
  await env.startRuntime();
  expect(await client.call("add", { a: 2, b: 3 })).toEqual({ sum: 5 });
  const job = await client.enqueue("insert-quick", { name: "as-client" });
  await client.result(job.id, { timeout: "30s" });
  expect((await client.status(job.id)).status).toBe("succeeded");
  const cli = await runCli(["enqueue", "insert-quick", '{"name":"cli-wait"}', "--wait", "--json"], {
    NATS_URL: env.nats.url,
    NATS_USER: "jetfn-client",
    NATS_PASSWORD: CLIENT_PASSWORD,
  });
  expect(cli.code, cli.stderr).toBe(0);
  expect(cli.stdout).toContain("cli-wait");
});
