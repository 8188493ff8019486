import { randomUUID } from "node:crypto";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection, headers as natsHeaders } from "@nats-io/transport-node";
import { afterAll, beforeAll, expect, it } from "vitest";
import { createTestEnvironment, eventually, type TestEnvironment } from "../helpers/environment";
import { CLIENT_PASSWORD, shippedNatsAuth } from "../helpers/shipped-nats-auth";

// Against the shipped nats.auth.conf: the client account may publish delayed jobs to
// jetfn.delayed.<id> itself, with any headers, skipping the checks of the client library and of
// the enqueue API. The delayed-jobs mover must check every header it acts on. A debounce key of
// 3 KB made the key-value subject of its claim longer than the server's control-line limit (4096),
// and the server closed the runtime's connection, again at every redelivery of the message.

let env: TestEnvironment;
let attacker: NatsConnection;

beforeAll(async () => {
  env = await createTestEnvironment(await shippedNatsAuth());
  await env.database.sql`create table items (id serial primary key, name text not null, attempt int, invocation text)`;
  attacker = await connect({ servers: env.nats.url, user: "jetfn-client", pass: CLIENT_PASSWORD });
});

afterAll(async () => {
  await attacker?.close();
  await env?.close();
});

/** Publishes a delayed job as the client account would, due now; returns its id. */
async function publishDelayed(name: string, extra: Record<string, string>, id = `job-${randomUUID()}`) {
  const header = natsHeaders();
  header.set("Jetfn-Id", id);
  header.set("Jetfn-Function", "insert-item");
  header.set("Jetfn-Not-Before", String(Date.now() + 300));
  for (const [key, value] of Object.entries(extra)) header.set(key, value);
  await attacker.request(`jetfn.delayed.${id}`, JSON.stringify({ name }), { headers: header, timeout: 5_000 });
  return id;
}

async function ranAs(id: string): Promise<string[]> {
  const rows = await env.database.sql<{ name: string }[]>`select name from items where invocation = ${id}`;
  return rows.map((row) => row.name);
}

it("moves a delayed job whose debounce key is too long undebounced, and keeps the runtime connected", {
  timeout: 90_000,
}, async () => {
  const runtime = await env.startRuntime();
  const disconnects: string[] = [];
  void (async () => {
    for await (const status of runtime.nats.status()) {
      if (status.type === "disconnect" || status.type === "reconnect") disconnects.push(status.type);
    }
  })();
  const hostile = [
    await publishDelayed("long-key", { "Jetfn-Debounce-Key": "k".repeat(3_000) }),
    await publishDelayed("wildcard-key", { "Jetfn-Debounce-Key": "tenant.>" }),
    await publishDelayed("empty-key", { "Jetfn-Debounce-Key": "" }),
  ];
  const clean = await publishDelayed("after", {});
  await eventually(async () => (await ranAs(clean)).length === 1, 60_000);
  for (const id of hostile) await eventually(async () => (await ranAs(id)).length === 1, 30_000);
  expect(disconnects).toEqual([]);
  // No claim was taken for a key the enqueue API refuses.
  const keys = await runtime.nats.request("$JS.API.STREAM.INFO.KV_JETFN_JOB_KEYS", "", { timeout: 5_000 });
  expect(keys.json<{ state?: { messages: number } }>().state?.messages ?? 0).toBe(0);
  const warned = runtime.logs.matching("debounce key the enqueue API would refuse");
  expect(warned.map((line) => line.invocationId).sort()).toEqual([...hostile].sort());
  expect(warned.every((line) => line.fn === "insert-item")).toBe(true);
  await runtime.stop();
});

it("checks the other headers of a client's delayed job: id, function, due time, priority, retry of", {
  timeout: 90_000,
}, async () => {
  const runtime = await env.startRuntime();
  const manager = await jetstreamManager(runtime.nats);
  // Dropped (terminated) with a log line: nothing to run them as.
  const mismatched = await publishDelayed("id-mismatch", { "Jetfn-Id": "job-someone-else-0001" });
  await publishDelayed("bad-function", { "Jetfn-Function": "Bad.>" });
  await publishDelayed("due-in-words", { "Jetfn-Not-Before": "soon" });
  await publishDelayed("due-too-long", { "Jetfn-Not-Before": "9".repeat(40) });
  // Run, as the same job published to fn.job.insert-item would: an unknown priority is the
  // default level, a retry-of that is not an id is ignored.
  const oddPriority = await publishDelayed("odd-priority", { "Jetfn-Priority": "9".repeat(2_000) });
  const oddRetryOf = await publishDelayed("odd-retry-of", { "Jetfn-Retry-Of": "x.>".repeat(1_000) });
  await eventually(async () => (await ranAs(oddPriority)).length === 1, 60_000);
  await eventually(async () => (await ranAs(oddRetryOf)).length === 1, 60_000);
  const [retried] = await env.database.sql<{ retry_of: string | null }[]>`
    select retry_of from jetfn.invocations where id = ${oddRetryOf}`;
  expect(retried?.retry_of ?? null).toBeNull();
  await eventually(async () => (await manager.streams.info("JETFN_JOBS_DELAYED")).state.messages === 0, 30_000);
  expect(runtime.logs.matching("Dropped a delayed job without a valid id").length).toBe(4);
  expect(await ranAs(mismatched)).toEqual([]);
  const [names] = await env.database.sql<{ n: number }[]>`
    select count(*)::int as n from items where name in ('id-mismatch', 'bad-function', 'due-in-words', 'due-too-long')`;
  expect(names?.n).toBe(0);
  await runtime.stop();
});
