import { jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, expect, it } from "vitest";
import { createTestEnvironment, eventually, type TestEnvironment } from "../helpers/environment";

// On a server where clients and runtimes share one account (nats.conf of `jetfn dev`, or an
// operator's own authorization block), the runtime itself must refuse to answer to a reply subject
// that is not an inbox: it answers with its own permissions, so `$JS.API.STREAM.PURGE.JETFN_JOBS`
// would purge the jobs and `jetfn.done.<id>` would announce someone's job as done.
const PURGE = "$JS.API.STREAM.PURGE.JETFN_JOBS";
const REQUESTS: [subject: string, body: string][] = [
  ["jetfn.api.status", JSON.stringify({ id: "x1234567" })],
  ["fn.call.add", JSON.stringify({ a: 1, b: 2 })],
  ["fn.call.no-such-function", "{}"],
  ["jetfn.api.dlq.list", "{}"],
  ["$SRV.PING", ""],
  ["$SRV.STATS.jetfn", ""],
];

let env: TestEnvironment;
let attacker: NatsConnection;

beforeAll(async () => {
  env = await createTestEnvironment();
  attacker = await connect({ servers: env.nats.url });
});

afterAll(async () => {
  await attacker?.close();
  await env?.close();
});

it("drops every request whose reply subject is not an inbox, with one warning", { timeout: 60_000 }, async () => {
  const runtime = await env.startRuntime();
  const client = await env.client();
  for (let index = 0; index < 5; index++) await client.enqueue("parked", { index });
  const manager = await jetstreamManager(runtime.nats);
  const refused: string[] = [];
  runtime.events.on("reply:refused", (event) => refused.push(`${event.api} ${event.subject} -> ${event.reply}`));
  const announced: string[] = [];
  const notices = attacker.subscribe("jetfn.done.victim-job", {
    callback: () => {
      announced.push("notice");
    },
  });
  for (const [subject, body] of REQUESTS) {
    attacker.publish(subject, body, { reply: PURGE });
    attacker.publish(subject, body, { reply: "jetfn.done.victim-job" });
  }
  await attacker.flush();
  await eventually(() => refused.length === REQUESTS.length * 2, 15_000);
  // The same requests from an inbox are answered.
  expect((await client.status("x1234567")).status).toBe("pending");
  expect(await client.call("add", { a: 1, b: 2 })).toEqual({ sum: 3 });
  expect((await manager.streams.info("JETFN_JOBS")).state.messages).toBe(5);
  await attacker.flush();
  notices.unsubscribe();
  expect(announced).toEqual([]);
  expect(new Set(refused.map((line) => line.split(" ")[0]))).toEqual(new Set(["status", "call", "dlq", "discovery"]));
  const warnings = runtime.logs.matching("reply subject is not an inbox");
  expect(warnings).toHaveLength(1);
  expect(warnings[0]).toMatchObject({ level: 40, refused: 1 });
});

it("answers to the extra inbox prefixes it is configured with", { timeout: 60_000 }, async () => {
  await env.startRuntime({ inboxPrefixes: ["app-1.inbox"] });
  const custom = await connect({ servers: env.nats.url, inboxPrefix: "app-1.inbox" });
  try {
    const reply = await custom.request("jetfn.api.status", JSON.stringify({ id: "x1234567" }), { timeout: 5_000 });
    expect(reply.json()).toMatchObject({ id: "x1234567", status: "pending" });
  } finally {
    await custom.close();
  }
});
