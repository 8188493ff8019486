import { jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection, headers as natsHeaders } from "@nats-io/transport-node";
import { afterAll, beforeAll, expect, it } from "vitest";
import { refuseDuplicate } from "../../runtime/flow/chosen-id";
import type { Runtime } from "../../runtime/runtime";
import { createClient, type JetfnClient } from "../../runtime/sdk/client";
import { createTestEnvironment, eventually, type TestEnvironment } from "../helpers/environment";
import { CLIENT_PASSWORD, shippedNatsAuth } from "../helpers/shipped-nats-auth";

// Against the shipped nats.auth.conf: a client may choose the id of a keyed (debounce or singleton)
// enqueue. Choosing the id of another job, one still waiting, must not touch that job: with a
// debounce key that has a later job, the enqueue API recorded the other job `superseded` (and
// removed it when it was a delayed job), so it never ran; with a singleton key, the other job held
// the key and later enqueues of the key were folded into it. The enqueue API refuses such an id
// with E_ID_CONFLICT, and the other job runs as it would have.

let env: TestEnvironment;
let app: JetfnClient;
let attacker: NatsConnection;
let runtime: Runtime;

beforeAll(async () => {
  env = await createTestEnvironment(await shippedNatsAuth());
  await env.database.sql`create table items (id serial primary key, name text not null, attempt int, invocation text)`;
  runtime = await env.startRuntime({}, { laterTestsUseIt: true });
  const client = { natsUrl: env.nats.url, natsUser: "jetfn-client", natsPassword: CLIENT_PASSWORD };
  app = await createClient(client);
  attacker = await connect({ servers: env.nats.url, user: "jetfn-client", pass: CLIENT_PASSWORD });
});

afterAll(async () => {
  await attacker?.close();
  await app?.close();
  await env?.close();
});

/** A keyed enqueue as a client sends it without the client library; resolves to its reply. */
async function keyedEnqueue(fn: string, input: unknown, headers: Record<string, string>) {
  const header = natsHeaders();
  header.set("Jetfn-Function", fn);
  for (const [name, value] of Object.entries(headers)) header.set(name, value);
  const reply = await attacker.request("jetfn.api.enqueue", JSON.stringify(input), {
    headers: header,
    timeout: 10_000,
  });
  return reply.json<{
    id?: string;
    existing?: boolean;
    supersededBy?: string;
    error?: { code: string; message: string };
  }>();
}

/** The status a job ends with, once it ended. */
async function ended(id: string, timeoutMs = 30_000): Promise<string> {
  return eventually(async () => {
    const { status } = await app.status(id);
    return ["succeeded", "dead", "cancelled", "superseded"].includes(status) ? status : undefined;
  }, timeoutMs);
}

async function ranAs(id: string): Promise<string[]> {
  const rows = await env.database.sql<{ name: string }[]>`select name from items where invocation = ${id}`;
  return rows.map((row) => row.name);
}

it("refuses a debounced enqueue reusing the id of a delayed job; the delayed job still runs", async () => {
  const victim = await app.enqueue("insert-item", { name: "victim-delayed" }, { id: "order-4711-charge", delay: "3s" });
  // A later job of the debounce key the attacker names.
  const later = await app.enqueue("insert-item", { name: "later" }, { debounce: { key: "tenant-7", period: "1s" } });
  const reply = await keyedEnqueue(
    "insert-item",
    { name: "attacker" },
    { "Jetfn-Id": victim.id, "Jetfn-Debounce-Key": "tenant-7", "Jetfn-Debounce-Period": "1000" },
  );
  const outcome = { attacker: reply.error?.code ?? reply, victim: await ended(victim.id) };
  expect(outcome).toEqual({ attacker: "E_ID_CONFLICT", victim: "succeeded" });
  expect(reply.error?.message).toMatch(/order-4711-charge.*already/);
  expect(await ranAs(victim.id)).toEqual(["victim-delayed"]);
  expect(await ended(later.id)).toBe("succeeded");
  expect(await ranAs(later.id)).toEqual(["later"]);
}, 60_000);

it("refuses a debounced enqueue reusing the id of a job queued behind a slow one", async () => {
  // write-then-wait runs one job at a time: the blocker keeps the victim queued in the stream.
  const blocker = await app.enqueue("write-then-wait", { name: "blocker", ms: 3_000 });
  await eventually(async () => (await app.status(blocker.id)).status === "running", 15_000);
  const victim = await app.enqueue("write-then-wait", { name: "victim-queued", ms: 0 }, { id: "order-4712-charge" });
  const debounce = { "Jetfn-Debounce-Key": "tenant-8", "Jetfn-Debounce-Period": "500" };
  const reply = await keyedEnqueue(
    "write-then-wait",
    { name: "attacker", ms: 0 },
    {
      "Jetfn-Id": victim.id,
      ...debounce,
    },
  );
  // A later job of the key: before the fix it superseded the job holding the key, under the victim's id.
  const next = await keyedEnqueue("write-then-wait", { name: "next", ms: 0 }, debounce);
  const outcome = { attacker: reply.error?.code ?? reply, victim: await ended(victim.id) };
  expect(outcome).toEqual({ attacker: "E_ID_CONFLICT", victim: "succeeded" });
  expect(await ranAs(victim.id)).toEqual(["victim-queued"]);
  expect(next.id).toBeDefined();
  expect(await ended(next.id as string)).toBe("succeeded");
}, 60_000);

it("refuses a singleton enqueue reusing the id of a waiting job; the key stays free for others", async () => {
  const victim = await app.enqueue("insert-item", { name: "victim-single" }, { id: "order-4713-charge", delay: "3s" });
  const reply = await keyedEnqueue(
    "insert-item",
    { name: "attacker" },
    {
      "Jetfn-Id": victim.id,
      "Jetfn-Singleton-Key": "nightly",
    },
  );
  // An app's enqueue of the key gets a job of its own, not the victim folded in as the key's holder.
  const own = await app.enqueue("insert-item", { name: "own" }, { singleton: { key: "nightly" } });
  expect({ attacker: reply.error?.code ?? reply, holder: own.id === victim.id }).toEqual({
    attacker: "E_ID_CONFLICT",
    holder: false,
  });
  expect(await ended(victim.id)).toBe("succeeded");
  expect(await ranAs(victim.id)).toEqual(["victim-single"]);
  expect(await ranAs(own.id)).toEqual(["own"]);
}, 60_000);

it("still answers a repeat of a keyed enqueue with the same id, key and function", async () => {
  const blocker = await app.enqueue("write-then-wait", { name: "blocker-2", ms: 2_000 });
  await eventually(async () => (await app.status(blocker.id)).status === "running", 15_000);
  const single = { id: "repeat-single-0001", singleton: { key: "repeat" } };
  const first = await app.enqueue("write-then-wait", { name: "single", ms: 0 }, single);
  expect(await app.enqueue("write-then-wait", { name: "single", ms: 0 }, single)).toMatchObject({
    id: first.id,
    existing: true,
  });
  const debounced = { id: "repeat-debounced-0001", debounce: { key: "repeat", period: "300ms" } };
  const once = await app.enqueue("insert-item", { name: "debounced" }, debounced);
  const again = await app.enqueue("insert-item", { name: "debounced" }, debounced);
  expect(again).toMatchObject({ id: once.id, duplicate: true });
  expect(again.supersededBy).toBeUndefined();
  expect(await ended(once.id)).toBe("succeeded");
  expect(await ranAs(once.id)).toEqual(["debounced"]);
  expect(await ended(first.id)).toBe("succeeded");
}, 60_000);

it("refuses a publish that JetStream answers with another job's message under the id", async () => {
  // What the enqueue API does when a job of the id was stored between its look and its publish.
  const manager = await jetstreamManager(runtime.nats);
  const stored = async (id: string) => {
    const message = await manager.streams.getMessage("JETFN_JOBS_DELAYED", { last_by_subj: `jetfn.delayed.${id}` });
    if (!message) throw new Error(`no delayed job ${id}`);
    return { stream: "JETFN_JOBS_DELAYED", seq: message.seq };
  };
  const victim = await app.enqueue("insert-item", { name: "victim-raced" }, { id: "order-4714-charge", delay: "1m" });
  const debounced = { id: "order-4715-charge", debounce: { key: "tenant-9", period: "1m" } };
  const own = await app.enqueue("insert-item", { name: "own" }, debounced);
  const job = { fn: "insert-item", kind: "debounce" as const, key: "tenant-9" };
  await expect(refuseDuplicate(manager, await stored(victim.id), { ...job, id: victim.id })).rejects.toMatchObject({
    code: "E_ID_CONFLICT",
  });
  // Another job's message under the id asked for (a client may choose any message id).
  await expect(refuseDuplicate(manager, await stored(own.id), { ...job, id: victim.id })).rejects.toMatchObject({
    code: "E_ID_CONFLICT",
  });
  await expect(refuseDuplicate(manager, await stored(own.id), { ...job, id: own.id })).resolves.toBeUndefined();
  await app.cancel(victim.id);
  await app.cancel(own.id);
});
