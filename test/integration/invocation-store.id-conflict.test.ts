import { afterAll, beforeAll, expect, it } from "vitest";
import { connectDatabase, type DatabaseClient } from "../../runtime/db/client";
import { createSuccessRecorder, otherOwner, recordFailure } from "../../runtime/db/invocation-store";
import { createTestDatabase, type TestDatabase } from "../helpers/database";

// The completion functions write the record of an id only for the function that holds it: another
// function's completion raises JF002 (E_ID_CONFLICT in the runtime) and leaves the record as it was,
// while the same function's second completion still raises JF001 (fenced out).
let database: TestDatabase;
// The runtime's own pool, for the runtime's statements (its type handling passes JSON text through).
let client: DatabaseClient;

beforeAll(async () => {
  database = await createTestDatabase();
  client = connectDatabase({ url: database.url, poolSize: 2 });
});

afterAll(async () => {
  await client?.close();
  await database?.drop();
});

const complete = (id: string, fn: string, result: unknown) =>
  database.sql`select jetfn.complete_invocation(${id}, ${fn}, 1, '{}'::jsonb, ${database.sql.json(result as never)}, now(), now(), 1, null)`;

const completeGroup = (rows: { id: string; function: string }[]) =>
  database.sql`select jetfn.complete_invocations(${database.sql.json(
    rows.map((row) => ({ ...row, attempts: 1, input: {}, result: { by: row.function } })) as never,
  )})`;

const recordOf = async (id: string) =>
  (await database.sql`select function, status, result from jetfn.invocations where id = ${id}`)[0];

it("refuses another function's completion of an id with JF002, and fences the same function's with JF001", async () => {
  await complete("owned-0001", "ledger-add", { by: "ledger-add" });
  await expect(complete("owned-0001", "bigresult", { by: "bigresult" })).rejects.toMatchObject({ code: "JF002" });
  await expect(complete("owned-0001", "ledger-add", { by: "again" })).rejects.toMatchObject({ code: "JF001" });
  expect(await recordOf("owned-0001")).toEqual({
    function: "ledger-add",
    status: "succeeded",
    result: { by: "ledger-add" },
  });
});

it("refuses another function's completion of a failed job's id, leaving it to be retried", async () => {
  await database.sql`insert into jetfn.invocations (id, function, status, attempts) values ('owned-0002', 'ledger-add', 'failed', 1)`;
  await expect(complete("owned-0002", "bigresult", { by: "bigresult" })).rejects.toMatchObject({ code: "JF002" });
  expect(await recordOf("owned-0002")).toEqual({ function: "ledger-add", status: "failed", result: null });
});

it("refuses a group holding another function's id with JF002, and writes none of it", async () => {
  await expect(
    completeGroup([
      { id: "group-0001", function: "echo" },
      { id: "owned-0001", function: "bigresult" },
    ]),
  ).rejects.toMatchObject({ code: "JF002" });
  expect(await recordOf("group-0001")).toBeUndefined();
  await expect(completeGroup([{ id: "owned-0001", function: "ledger-add" }])).rejects.toMatchObject({
    code: "JF001",
  });
  await completeGroup([{ id: "group-0001", function: "echo" }]);
  expect(await recordOf("group-0001")).toMatchObject({ function: "echo", status: "succeeded" });
});

it("keeps another function's record from failure records and batched successes", async () => {
  const record = {
    id: "owned-0001",
    fn: "bigresult",
    attempt: 1,
    input: {},
    enqueuedAt: new Date().toISOString(),
    startedAt: new Date().toISOString(),
    streamSeq: 9,
    retryOf: undefined,
  };
  const error = { attempt: 1, code: "E_HANDLER_FAILED", name: "Error", message: "boom", at: new Date().toISOString() };
  await database.sql`update jetfn.invocations set status = 'failed' where id = 'owned-0001'`;
  expect(await recordFailure(client.sql, record, "dead", error)).toBe(false);
  expect(await otherOwner(client.sql, record.id, record.fn)).toBe("ledger-add");
  const recorder = createSuccessRecorder(client.sql);
  await expect(recorder.record(record, JSON.stringify({ by: "bigresult" }))).rejects.toMatchObject({
    code: "E_ID_CONFLICT",
  });
  expect(await recordOf("owned-0001")).toEqual({
    function: "ledger-add",
    status: "failed",
    result: { by: "ledger-add" },
  });
});
