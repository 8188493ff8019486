import postgres, { type Sql } from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type CommitGroups, createCommitGroups } from "../../runtime/db/commit-groups";
import { createInvocationTransaction } from "../../runtime/db/invocation-transaction";
import type { TransactionStamp } from "../../runtime/db/transaction-parts";
import { createGroupedDatabase, finalRecord } from "../helpers/commit-groups";
import type { TestDatabase } from "../helpers/database";

// The stamp travels as SET LOCAL statements written with literals: whatever an invocation id
// holds (job ids may be chosen by the caller), the audit log must get it back exactly.
let database: TestDatabase;
let pool: Sql;
let groups: CommitGroups;

beforeAll(async () => {
  ({ database, pool } = await createGroupedDatabase());
  groups = createCommitGroups(pool, { lanes: 1, maxSharedHoldMs: 60_000 });
});

afterAll(async () => {
  await groups?.close();
  await pool?.end({ timeout: 2 });
  await database?.drop();
});

const AWKWARD_ID = `it's a \\ test; select 1 -- "quoted" ${"é".repeat(3)} $1`;

// A first attempt in a group is recorded by the group's complete_invocations(); a later one, and
// one alone, by its own complete_invocation().
describe.each([
  ["a transaction of its own", () => undefined, 3],
  ["a shared transaction (group commit), first attempt", () => groups, 1],
  ["a shared transaction (group commit), later attempt", () => groups, 2],
])("the stamp of %s", (_, groupsFor, attempt) => {
  it("reaches the settings and the audit log exactly, with its statement timeout", async () => {
    const stamp: TransactionStamp = {
      functionName: "stamp-writer",
      invocationId: `${AWKWARD_ID} ${attempt}`,
      attempt,
      statementTimeoutMs: 4_321,
    };
    const tx = createInvocationTransaction(pool, stamp, groupsFor());
    const [settings] = (await tx.db.execute(
      "select current_setting('jetfn.function') as fn, current_setting('jetfn.invocation_id') as id, " +
        "current_setting('jetfn.attempt') as attempt, current_setting('statement_timeout') as timeout",
    )) as unknown as { fn: string; id: string; attempt: string; timeout: string }[];
    expect(settings).toEqual({
      fn: "stamp-writer",
      id: stamp.invocationId,
      attempt: String(attempt),
      timeout: "4321ms",
    });
    await tx.db.execute(`insert into grouped_rows (id, n) values ('row-${attempt}', ${attempt})`);
    await tx.commit(finalRecord(stamp.invocationId, attempt));

    const audit = await database.sql`
      select function, invocation_id, attempt from jetfn.audit_log
      where table_name = 'grouped_rows' and invocation_id = ${stamp.invocationId}`;
    expect(audit).toEqual([{ function: "stamp-writer", invocation_id: stamp.invocationId, attempt }]);
    const [record] =
      await database.sql`select status, attempts from jetfn.invocations where id = ${stamp.invocationId}`;
    expect(record).toEqual({ status: "succeeded", attempts: attempt });
  });
});

it("leaves no stamp behind for the session's next transaction", async () => {
  // One connection, so the check runs on the session the transaction used.
  const single = postgres(database.url, { max: 1, onnotice: () => {} });
  const tx = createInvocationTransaction(single, {
    functionName: "stamp-writer",
    invocationId: "short-lived",
    attempt: 1,
    statementTimeoutMs: 1_000,
  });
  await tx.db.execute("select 1");
  await tx.commit();
  const [after] = await single.unsafe(
    "select coalesce(current_setting('jetfn.function', true), '') as fn, current_setting('statement_timeout') as timeout",
  );
  await single.end();
  expect(after).toEqual({ fn: "", timeout: "0" });
});

it("refuses a stamp that cannot be written as SQL without taking a connection or a lane", async () => {
  const single = postgres(database.url, { max: 1, onnotice: () => {} });
  const lone = createCommitGroups(single, { lanes: 1 });
  const broken = { functionName: "stamp-writer", invocationId: "nul\u0000here", attempt: 1, statementTimeoutMs: 1_000 };
  try {
    for (const groupsOf of [undefined, lone]) {
      const tx = createInvocationTransaction(single, broken, groupsOf);
      // drizzle wraps the driver's error; the cause says what was wrong.
      await expect(tx.db.execute("select 1")).rejects.toMatchObject({
        cause: { message: expect.stringContaining("U+0000") },
      });
      await tx.rollback();
      // The one connection (and the one lane) still serve the next job.
      const next = createInvocationTransaction(single, { ...broken, invocationId: "next-job" }, groupsOf);
      const [row] = (await next.db.execute("select current_setting('jetfn.invocation_id') as id")) as unknown as {
        id: string;
      }[];
      expect(row?.id).toBe("next-job");
      await next.commit();
    }
  } finally {
    await lone.close();
    await single.end();
  }
});
