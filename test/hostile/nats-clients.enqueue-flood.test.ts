import { headers as natsHeaders } from "@nats-io/transport-node";
import { afterAll, beforeAll, expect, it } from "vitest";
import { MAX_KEYED_ENQUEUES_IN_FLIGHT } from "../../runtime/flow/enqueue-api";
import { createTestEnvironment, eventually, type TestEnvironment } from "../helpers/environment";

// A client floods jetfn.api.enqueue with singleton requests. Each costs the answering runtime
// key-value round trips and a Postgres lookup; unbounded, the flood would hold the database pool
// that jobs need. The runtime works on at most MAX_KEYED_ENQUEUES_IN_FLIGHT at once and refuses
// the rest at once with E_UNAVAILABLE, and a normal job still runs meanwhile.

let env: TestEnvironment;

beforeAll(async () => {
  env = await createTestEnvironment();
  await env.database.sql`create table items (id serial primary key, name text not null, attempt int, invocation text)`;
});

afterAll(async () => {
  await env?.close();
});

const FLOOD = 3_000;

it("refuses keyed enqueues past the bound with E_UNAVAILABLE, and normal jobs still run", async () => {
  await env.startRuntime();
  const client = await env.client();
  const nc = client.connection;
  const body = new TextEncoder().encode(JSON.stringify({ name: "flood", ms: 3_000 }));
  const replies = Array.from({ length: FLOOD }, () => {
    const header = natsHeaders();
    header.set("Jetfn-Function", "write-then-wait");
    header.set("Jetfn-Singleton-Key", "flood");
    return nc.request("jetfn.api.enqueue", body, { headers: header, timeout: 120_000 });
  });
  // Sent while the flood is being answered.
  const started = Date.now();
  const normal = await client.enqueue("insert-item", { name: "normal" });
  await eventually(async () => (await client.status(normal.id)).status === "succeeded", 60_000);
  const normalMs = Date.now() - started;

  const answers = (await Promise.all(replies)).map((reply) => ({
    code: reply.headers?.get("Nats-Service-Error-Code") ?? "",
    body: JSON.parse(new TextDecoder().decode(reply.data)) as {
      id?: string;
      error?: { code: string; message: string };
    },
  }));
  const refused = answers.filter((answer) => answer.body.error?.code === "E_UNAVAILABLE");
  const accepted = answers.filter((answer) => answer.body.id !== undefined);
  console.log(
    `flood of ${FLOOD}: ${refused.length} refused, ${accepted.length} answered; normal job done in ${normalMs} ms`,
  );
  expect(refused.length).toBeGreaterThan(0);
  expect(refused.length + accepted.length).toBe(FLOOD);
  for (const answer of refused) {
    expect(answer.code).toBe("503");
    expect(answer.body.error?.message).toMatch(
      new RegExp(`already working on ${MAX_KEYED_ENQUEUES_IN_FLIGHT} keyed .* enqueues; try again`),
    );
  }
  // Every accepted request folded into one job (it runs for 3 s, longer than the flood).
  const ids = new Set(accepted.map((answer) => answer.body.id as string));
  expect(ids.size).toBe(1);
  const [holder] = [...ids] as [string];
  await eventually(async () => (await client.status(holder)).status === "succeeded", 60_000);
  const rows = await env.database.sql`select name from items where name = 'flood'`;
  expect(rows).toHaveLength(1);
}, 180_000);
