import type { Sql } from "postgres";
import { afterAll, afterEach, beforeAll, expect, it } from "vitest";
import { type CommitGroups, createCommitGroups } from "../../runtime/db/commit-groups";
import { AUDIT_MARK_SQL, GROUP_CHECK_SQL, groupMembers } from "../../runtime/db/invocation-checks";
import { createInvocationTransaction } from "../../runtime/db/invocation-transaction";
import { isSharedCommitFailure } from "../../runtime/db/shared-commit-error";
import { createGroupedDatabase } from "../helpers/commit-groups";
import type { TestDatabase } from "../helpers/database";

// Two jobs share one transaction (group commit). The second calls a database function, which the
// statement guard cannot read, that stamps its writes as the first job. Before, the check before
// COMMIT only asked whether each audit row names some job of the transaction, and the victim is
// one: the forged row committed, audited as the victim's. Now each job's rows must carry its own
// stamp: the group rolls back, and each job runs again alone (where the forger fails by itself).

let database: TestDatabase;
let pool: Sql;
let groups: CommitGroups | undefined;
let invocation = 0;

beforeAll(async () => {
  ({ database, pool } = await createGroupedDatabase());
  await database.sql.unsafe(`
    create function forge_stamp(f text, i text) returns text language sql
      as $$ select set_config('jetfn.function', f, true) || set_config('jetfn.invocation_id', i, true) $$`);
});

afterEach(async () => {
  await groups?.close();
  groups = undefined;
  await database.sql.unsafe("truncate grouped_rows");
});

afterAll(async () => {
  await pool?.end({ timeout: 2 });
  await database?.drop();
});

function job(): { id: string; tx: ReturnType<typeof createInvocationTransaction> } {
  const id = `00000000-0000-4000-8000-${String(++invocation).padStart(12, "0")}`;
  const stamp = { functionName: "grouped-writer", invocationId: id, attempt: 1, statementTimeoutMs: 10_000 };
  return { id, tx: createInvocationTransaction(pool, stamp, groups as CommitGroups) };
}

async function insert(tx: ReturnType<typeof createInvocationTransaction>, id: string, n: number): Promise<void> {
  await tx.db.execute(`insert into grouped_rows (id, n) values ('${id}', ${n})`);
}

it.each([
  ["after its victim", "victim first"],
  ["before its victim", "forger first"],
])("never commits a job's rows stamped as another job of its group (forger %s)", async (_, order) => {
  groups = createCommitGroups(pool, { lanes: 1, maxSharedHoldMs: 60_000 });
  const victim = job();
  const forger = job();
  const [first, second] = order === "victim first" ? [victim, forger] : [forger, victim];
  const run = async ({ id, tx }: typeof victim, n: number): Promise<void> => {
    if (id === forger.id) await tx.db.execute(`select forge_stamp('grouped-writer', '${victim.id}')`);
    await insert(tx, `${id}-row`, n);
    await tx.commit();
  };
  // The first job holds the lane while the second waits for it: both share one transaction.
  await first.tx.db.execute("select 1");
  const outcomes = Promise.allSettled([run(first, 1), run(second, 2)]);
  const settled = await outcomes;
  expect(settled.map((outcome) => outcome.status)).toEqual(["rejected", "rejected"]);
  for (const outcome of settled) {
    expect(isSharedCommitFailure((outcome as PromiseRejectedResult).reason)).toBe(true);
  }
  const rows = await database.sql`select id from grouped_rows`;
  expect(rows).toHaveLength(0);
  const audited = await database.sql`
    select invocation_id from jetfn.audit_log
    where table_name = 'grouped_rows' and invocation_id in (${victim.id}, ${forger.id})`;
  expect(audited).toHaveLength(0);
});

it("still commits a group whose jobs each write under their own stamp, some writing nothing", async () => {
  groups = createCommitGroups(pool, { lanes: 1, maxSharedHoldMs: 60_000 });
  const jobs = Array.from({ length: 5 }, job);
  await jobs[0]?.tx.db.execute("select 1");
  await Promise.all(
    jobs.map(async ({ id, tx }, n) => {
      if (n !== 2) await insert(tx, id, n);
      else await tx.db.execute("select 1");
      await tx.commit();
    }),
  );
  const audited = await database.sql<{ invocation_id: string; txid: string }[]>`
    select invocation_id, txid::text from jetfn.audit_log
    where table_name = 'grouped_rows' and invocation_id in ${database.sql(jobs.map((j) => j.id))} order by id`;
  expect(audited.map((row) => row.invocation_id)).toEqual(jobs.filter((_, n) => n !== 2).map((j) => j.id));
  expect(new Set(audited.map((row) => row.txid)).size).toBe(1);
});

// A job that writes nothing leaves the next job's mark equal to its own, and the job that begins
// the transaction has no mark: the check takes each member's part from its place in the list.
it("commits a large group in which many jobs write nothing", async () => {
  groups = createCommitGroups(pool, { lanes: 1, maxSharedHoldMs: 60_000 });
  const jobs = Array.from({ length: 30 }, job);
  const writes = (n: number): boolean => n % 3 === 0;
  await jobs[0]?.tx.db.execute("select 1");
  await Promise.all(
    jobs.map(async ({ id, tx }, n) => {
      if (writes(n)) await insert(tx, id, n);
      else await tx.db.execute("select 1");
      await tx.commit();
    }),
  );
  const audited = await database.sql<{ invocation_id: string; txid: string }[]>`
    select invocation_id, txid::text from jetfn.audit_log
    where table_name = 'grouped_rows' and invocation_id in ${database.sql(jobs.map((j) => j.id))} order by id`;
  expect(audited.map((row) => row.invocation_id)).toEqual(jobs.filter((_, n) => writes(n)).map((j) => j.id));
  expect(new Set(audited.map((row) => row.txid)).size).toBe(1);
});

// The job that begins the shared transaction reads no mark (no row of the transaction can come
// before its part). The check accepts a member without one only as the first: a later member
// without a mark would have no lower bound, and a job before it could write rows in its name.
it.each([
  ["accepted as the first member", [false, true], undefined],
  ["refused as a later member", [true, false], "JF003"],
])("a member without a mark is %s", async (_, marked, refusal) => {
  const ids = [job().id, job().id];
  const connection = await database.sql.reserve();
  try {
    await connection.unsafe("begin");
    const members = [];
    for (const [n, id] of ids.entries()) {
      const [{ mark }] = (await connection.unsafe(AUDIT_MARK_SQL)) as unknown as [{ mark: string }];
      await connection.unsafe(
        `set local jetfn.function = 'grouped-writer'; set local jetfn.invocation_id = '${id}'; set local jetfn.attempt = '1'`,
      );
      await connection.unsafe(`insert into grouped_rows (id, n) values ('${id}', ${n})`);
      const stamp = { functionName: "grouped-writer", invocationId: id, attempt: 1, statementTimeoutMs: 10_000 };
      members.push({ stamp, mark: marked[n] ? mark : null });
    }
    const check = GROUP_CHECK_SQL.replace("$1", `'${groupMembers(members)}'`);
    const checked = connection.unsafe(check).then(
      () => undefined,
      (error: { code?: string }) => error.code,
    );
    expect(await checked).toBe(refusal);
  } finally {
    await connection.unsafe("rollback");
    connection.release();
  }
});
