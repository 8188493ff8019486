import type { Sql } from "postgres";
import { afterAll, beforeAll, expect, it } from "vitest";
import { type CommitGroups, createCommitGroups } from "../../runtime/db/commit-groups";
import { createInvocationTransaction } from "../../runtime/db/invocation-transaction";
import { createGroupedDatabase } from "../helpers/commit-groups";
import type { TestDatabase } from "../helpers/database";

// A temporary table ON COMMIT DROP (allowed: it ends with the transaction) lives until the
// COMMIT of a shared transaction, and Postgres searches pg_temp first: a later member's insert
// into the app table of the same name landed in it and vanished at COMMIT, while that member was
// told it committed (its write lost, its record succeeded). Now a job that may create a temporary
// object is the last of its shared transaction.

let database: TestDatabase;
let pool: Sql;
let groups: CommitGroups;

beforeAll(async () => {
  ({ database, pool } = await createGroupedDatabase());
});

afterAll(async () => {
  await groups?.close();
  await pool?.end({ timeout: 2 });
  await database?.drop();
});

function transaction(functionName: string, id: string) {
  return createInvocationTransaction(
    pool,
    { functionName, invocationId: id, attempt: 1, statementTimeoutMs: 10_000 },
    groups,
  );
}

it("keeps a later job's write out of an earlier job's temporary table of the same name", async () => {
  groups = createCommitGroups(pool, { lanes: 1, maxSharedHoldMs: 60_000 });
  const shadowing = transaction("shadowing", "00000000-0000-4000-8000-000000000001");
  await shadowing.db.execute("create temp table grouped_rows (id text, n integer) on commit drop");
  // Waits for the lane the shadowing job holds: it joins that job's transaction if it may.
  const victim = transaction("victim", "00000000-0000-4000-8000-000000000002");
  const victimDone = (async () => {
    await victim.db.execute("insert into grouped_rows (id, n) values ('victim', 1)");
    await victim.commit();
  })();
  // (A function of its own: a quick one joins whatever the lane holds.)
  await new Promise((resolve) => setTimeout(resolve, 50));
  await shadowing.commit();
  await victimDone;
  const rows = await database.sql`select id from public.grouped_rows`;
  expect(rows.map((row) => row.id)).toEqual(["victim"]);
});
