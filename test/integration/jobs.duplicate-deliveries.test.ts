import { randomUUID } from "node:crypto";
import { jetstream } from "@nats-io/jetstream";
import { connect, headers } from "@nats-io/transport-node";
import { afterAll, beforeAll, expect, it } from "vitest";
import { createTestEnvironment, eventually, type TestEnvironment } from "../helpers/environment";

// The same job stored twice in the stream (a publisher's retry that JetStream did not recognise as
// a duplicate, e.g. across a server restart): both copies arrive as first attempts, often in the
// same shared transaction or in two lanes at once. One copy commits, the other is refused by the
// fence; no job may be left unfinished or applied twice.
let env: TestEnvironment;

beforeAll(async () => {
  env = await createTestEnvironment();
  await env.database.sql`
    create table fault_rows (id bigserial primary key, n int not null, invocation text not null, attempt int not null)`;
});

afterAll(async () => {
  await env?.close();
});

it("finishes every job stored twice exactly once, with group commit", { timeout: 120_000 }, async () => {
  const JOBS = 300;
  const nc = await connect({ servers: env.nats.url });
  const js = jetstream(nc);
  const ids = Array.from({ length: JOBS }, () => randomUUID());
  const runtime = await env.startRuntime({ databasePoolSize: 10 });
  for (const [n, id] of ids.entries()) {
    for (const copy of ["a", "b"]) {
      const h = headers();
      h.set("Jetfn-Id", id);
      h.set("Nats-Msg-Id", `${id}-${copy}`);
      await js.publish("fn.job.fault-insert", JSON.stringify({ n }), { headers: h });
    }
  }
  const succeeded = await eventually(async () => {
    const [row] = await env.database.sql`
      select count(*)::int as done from jetfn.invocations where function = 'fault-insert' and status = 'succeeded'`;
    return row?.done === JOBS ? row.done : undefined;
  }, 60_000).catch(() => undefined);
  const [rows] = await env.database.sql`
    select count(*)::int as rows, count(distinct invocation)::int as distinct from fault_rows`;
  const [done] = await env.database.sql`
    select count(*)::int as done from jetfn.invocations where function = 'fault-insert' and status = 'succeeded'`;
  await nc.close();
  await runtime.stop();
  expect({ succeeded: done?.done, rows: rows?.rows, distinct: rows?.distinct }).toEqual({
    succeeded: JOBS,
    rows: JOBS,
    distinct: JOBS,
  });
  expect(succeeded).toBe(JOBS);
});
