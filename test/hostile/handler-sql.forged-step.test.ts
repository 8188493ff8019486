import type { Sql } from "postgres";
import { afterAll, afterEach, beforeAll, expect, it } from "vitest";
import { type CommitGroups, createCommitGroups } from "../../runtime/db/commit-groups";
import { createInvocationTransaction, type TransactionStamp } from "../../runtime/db/invocation-transaction";
import { isSharedCommitFailure } from "../../runtime/db/shared-commit-error";
import { createGroupedDatabase } from "../helpers/commit-groups";
import type { TestDatabase } from "../helpers/database";

// A durable step's transaction carries its key in the audit stamp (`jetfn.step`, migration 0033),
// and the audit row says which step wrote it. Database code a handler reaches (here a function it
// calls; a trigger would do the same) can set that setting, which the statement guard cannot see.
// Before, nothing compared it: a job could commit rows stamped as a step of its own that never ran
// them, or a step as another step. Now the check before COMMIT compares the step too (JF003), so
// the attempt fails with E_STATEMENT_REFUSED and nothing it wrote commits.

let database: TestDatabase;
let pool: Sql;
let groups: CommitGroups | undefined;
let invocation = 0;

beforeAll(async () => {
  ({ database, pool } = await createGroupedDatabase());
  await database.sql.unsafe(`
    create function forge_step(s text) returns text language sql as $$ select set_config('jetfn.step', s, true) $$`);
});

afterEach(async () => {
  await groups?.close();
  groups = undefined;
});

afterAll(async () => {
  await pool?.end({ timeout: 2 });
  await database?.drop();
});

function stamp(step?: string): TransactionStamp {
  const invocationId = `00000000-0000-4000-9000-${String(++invocation).padStart(12, "0")}`;
  return { functionName: "step-writer", invocationId, attempt: 1, step, statementTimeoutMs: 10_000 };
}

/** Writes one row in a transaction of `own`, after `before` (database code the handler reaches). */
async function write(own: TransactionStamp, before?: string): Promise<unknown> {
  const tx = createInvocationTransaction(pool, own, groups);
  try {
    if (before) await tx.db.execute(before);
    await tx.db.execute(`insert into grouped_rows (id, n) values ('${own.invocationId}', 1)`);
    await tx.commit();
    return undefined;
  } catch (error) {
    await tx.rollback();
    return error;
  }
}

async function audited(id: string): Promise<{ step: string | null }[]> {
  return (await database.sql`
    select step from jetfn.audit_log where table_name = 'grouped_rows' and invocation_id = ${id}`) as never;
}

it("stamps a step's rows with its key, and rows outside steps with none", async () => {
  const inStep = stamp("reserve#2");
  const outside = stamp();
  expect(await write(inStep)).toBeUndefined();
  expect(await write(outside)).toBeUndefined();
  expect(await audited(inStep.invocationId)).toEqual([{ step: "reserve#2" }]);
  expect(await audited(outside.invocationId)).toEqual([{ step: null }]);
});

it.each([
  ["a step writes as another step", "reserve", "select forge_step('charge')"],
  ["a step writes as no step", "reserve", "select forge_step('')"],
  ["a job without steps writes as a step", undefined, "select forge_step('charge')"],
])("refuses the commit when %s", async (_, step, forgery) => {
  const own = stamp(step);
  const error = (await write(own, forgery)) as { code?: string; message?: string } | undefined;
  expect(error?.code).toBe("E_STATEMENT_REFUSED");
  expect(error?.message).toMatch(/audit stamp was changed|stamped as/);
  expect(await audited(own.invocationId)).toEqual([]);
  expect(await database.sql`select id from grouped_rows where id = ${own.invocationId}`).toHaveLength(0);
});

it("refuses the commit when the stamp is forged after the step's rows were written", async () => {
  const own = stamp("reserve");
  const tx = createInvocationTransaction(pool, own, undefined);
  await tx.db.execute(`insert into grouped_rows (id, n) values ('${own.invocationId}', 1)`);
  // Rows already written carry the right step: the setting itself is compared too.
  await tx.db.execute("select forge_step('charge')");
  const error = await tx.commit().then(
    () => undefined,
    (thrown: { code?: string }) => thrown,
  );
  await tx.rollback();
  expect(error?.code).toBe("E_STATEMENT_REFUSED");
  expect(await audited(own.invocationId)).toEqual([]);
});

it("refuses the commit when rows were written as another step and the stamp put back", async () => {
  const own = stamp("reserve");
  const tx = createInvocationTransaction(pool, own, undefined);
  await tx.db.execute("select forge_step('charge')");
  await tx.db.execute(`insert into grouped_rows (id, n) values ('${own.invocationId}', 1)`);
  await tx.db.execute("select forge_step('reserve')");
  const error = await tx.commit().then(
    () => undefined,
    (thrown: { code?: string; message?: string }) => thrown,
  );
  await tx.rollback();
  expect(error?.code).toBe("E_STATEMENT_REFUSED");
  expect(error?.message).toMatch(/stamped as step-writer\/[^/]+\/1\/charge/);
  expect(await audited(own.invocationId)).toEqual([]);
});

it("rolls back a shared transaction in which a job wrote rows as a step", async () => {
  groups = createCommitGroups(pool, { lanes: 1, maxSharedHoldMs: 60_000 });
  const honest = stamp();
  const forger = stamp();
  const honestTx = createInvocationTransaction(pool, honest, groups);
  const forgerTx = createInvocationTransaction(pool, forger, groups);
  // The first job holds the lane while the second waits for it: both share one transaction.
  await honestTx.db.execute("select 1");
  const settled = await Promise.allSettled([
    (async () => {
      await honestTx.db.execute(`insert into grouped_rows (id, n) values ('${honest.invocationId}', 1)`);
      await honestTx.commit();
    })(),
    (async () => {
      await forgerTx.db.execute("select forge_step('charge')");
      await forgerTx.db.execute(`insert into grouped_rows (id, n) values ('${forger.invocationId}', 2)`);
      await forgerTx.commit();
    })(),
  ]);
  expect(settled.map((outcome) => outcome.status)).toEqual(["rejected", "rejected"]);
  for (const outcome of settled) {
    expect(isSharedCommitFailure((outcome as PromiseRejectedResult).reason)).toBe(true);
  }
  expect(await audited(forger.invocationId)).toEqual([]);
  expect(await audited(honest.invocationId)).toEqual([]);
});
