import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, expect, it } from "vitest";
import { endSuperseded } from "../../runtime/flow/superseded-record";
import { createTestDatabase, type TestDatabase } from "../helpers/database";
import { startNatsServer, type TestNatsServer } from "../helpers/nats-server";

// A debounced job is superseded before it moves to its function's queue. A job of its id that
// already ran an attempt (its record `failed`, waiting for a retry; or ended) is another copy of
// it: a repeated enqueue, or a delayed message a client published under the id with a debounce
// key. Superseding must leave that job alone; before, a `failed` record was turned `superseded`
// and the job's retry was fenced out.
let database: TestDatabase;
let nats: TestNatsServer;
let nc: NatsConnection;

beforeAll(async () => {
  [database, nats] = await Promise.all([createTestDatabase(), startNatsServer()]);
  nc = await connect({ servers: nats.url });
});

afterAll(async () => {
  await nc?.close();
  await Promise.allSettled([nats?.stop(), database?.drop()]);
});

async function record(id: string, status: string): Promise<void> {
  await database.sql`insert into jetfn.invocations (id, function, status, updated_at)
    values (${id}, 'insert-item', ${status}, now())`;
}

async function statusOf(id: string): Promise<string | undefined> {
  const [row] = await database.sql<{ status: string }[]>`select status from jetfn.invocations where id = ${id}`;
  return row?.status;
}

it("supersedes a job with no record, or one still queued, and no job that started", async () => {
  const cases = { "sup-none-0001": undefined, "sup-queued-0001": "queued", "sup-failed-0001": "failed" };
  for (const [id, status] of Object.entries(cases)) if (status) await record(id, status);
  const ended: Record<string, boolean> = {};
  for (const id of Object.keys(cases)) {
    ended[id] = await endSuperseded(database.sql, nc, { id, fn: "insert-item" }, "sup-later-0001", "doc:1");
  }
  expect(ended).toEqual({ "sup-none-0001": true, "sup-queued-0001": true, "sup-failed-0001": false });
  expect(await statusOf("sup-failed-0001")).toBe("failed");
  expect(await statusOf("sup-queued-0001")).toBe("superseded");
  expect(await statusOf("sup-none-0001")).toBe("superseded");
});
