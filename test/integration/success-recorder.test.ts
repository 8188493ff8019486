import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connectDatabase, type DatabaseClient } from "../../runtime/db/client";
import { createSuccessRecorder, type JobRecord, recordFailure } from "../../runtime/db/invocation-store";
import { createTestDatabase, type TestDatabase } from "../helpers/database";

let database: TestDatabase;
// The runtime's own pool: drizzle's type handling passes JSON text through as it is.
let client: DatabaseClient;

beforeAll(async () => {
  database = await createTestDatabase();
  client = connectDatabase({ url: database.url, poolSize: 4 });
});

afterAll(async () => {
  await client?.close();
  await database?.drop();
});

function job(id = randomUUID(), attempt = 1): JobRecord {
  return {
    id,
    fn: "recorder-test",
    attempt,
    input: { n: 1 },
    enqueuedAt: "2026-11-29T09:00:00.000Z",
    startedAt: "2026-11-29T09:00:01.000Z",
    streamSeq: 7,
    retryOf: undefined,
  };
}

async function statusOf(id: string): Promise<{ status: string; attempts: number; result: unknown } | undefined> {
  const [row] = await database.sql`select status, attempts, result from jetfn.invocations where id = ${id}`;
  return row as { status: string; attempts: number; result: unknown } | undefined;
}

describe("success recorder (batched records of jobs that wrote nothing)", () => {
  it("records every job of a batch as succeeded, and says so to each", async () => {
    const recorder = createSuccessRecorder(client.sql);
    const jobs = Array.from({ length: 50 }, () => job());
    const settled: boolean[] = [];
    const won = await Promise.all(
      jobs.map((record, n) => recorder.record(record, JSON.stringify({ n }), (applied) => settled.push(applied))),
    );
    expect(won).toEqual(jobs.map(() => true));
    expect(settled).toEqual(jobs.map(() => true));
    for (const [n, record] of jobs.entries()) {
      expect(await statusOf(record.id)).toEqual({ status: "succeeded", attempts: 1, result: { n } });
    }
  });

  it("refuses a job another attempt already finished, and records the rest of its batch", async () => {
    const recorder = createSuccessRecorder(client.sql);
    const finished = job();
    const dead = job();
    await recorder.record(finished, '"first"');
    await recordFailure(client.sql, dead, "dead", {
      attempt: 1,
      code: "E_HANDLER_FAILED",
      name: "Error",
      message: "boom",
      at: "2026-11-29T09:00:02.000Z",
    });
    const fresh = job();
    const won = await Promise.all([
      recorder.record({ ...finished, attempt: 2 }, '"second"'),
      recorder.record(fresh, '"fresh"'),
      recorder.record({ ...dead, attempt: 2 }, '"too late"'),
    ]);
    expect(won).toEqual([false, true, false]);
    expect(await statusOf(finished.id)).toEqual({ status: "succeeded", attempts: 1, result: "first" });
    expect(await statusOf(fresh.id)).toEqual({ status: "succeeded", attempts: 1, result: "fresh" });
    expect((await statusOf(dead.id))?.status).toBe("dead");
  });

  it("lets only the first of two copies of one job in a batch win", async () => {
    const recorder = createSuccessRecorder(client.sql);
    const record = job();
    const won = await Promise.all([
      recorder.record(record, '"one"'),
      recorder.record({ ...record, attempt: 2 }, '"two"'),
    ]);
    expect(won).toEqual([true, false]);
    expect(await statusOf(record.id)).toEqual({ status: "succeeded", attempts: 1, result: "one" });
  });

  it("turns a failed running record into a success", async () => {
    const recorder = createSuccessRecorder(client.sql);
    const record = job();
    await recordFailure(client.sql, record, "failed", {
      attempt: 1,
      code: "E_HANDLER_FAILED",
      name: "Error",
      message: "retry me",
      at: "2026-11-29T09:00:02.000Z",
    });
    expect(await recorder.record({ ...record, attempt: 2 }, '"fixed"')).toBe(true);
    expect(await statusOf(record.id)).toEqual({ status: "succeeded", attempts: 2, result: "fixed" });
  });
});
