import { afterAll, beforeAll, expect, it } from "vitest";
import { createTestEnvironment, eventually, type TestEnvironment } from "../helpers/environment";

let env: TestEnvironment;

beforeAll(async () => {
  env = await createTestEnvironment();
  await env.database
    .sql`create table group_rows (id bigserial primary key, tag text not null, n integer not null, invocation text not null)`;
  await env.startRuntime();
});

afterAll(async () => {
  await env?.close();
});

/** Postgres transaction ids of the audited inserts of one tag, and how many rows each holds. */
async function transactionsOf(tag: string): Promise<{ rows: number; transactions: number; stamped: boolean }> {
  const [row] = await env.database.sql<{ rows: number; transactions: number; stamped: boolean }[]>`
    select count(*)::int as rows, count(distinct a.txid)::int as transactions,
           bool_and(a.invocation_id = r.invocation and a.function is not null) as stamped
    from jetfn.audit_log a join group_rows r on a.pk ->> 'id' = r.id::text
    where a.table_name = 'group_rows' and a.operation = 'INSERT' and r.tag = ${tag}`;
  return row as { rows: number; transactions: number; stamped: boolean };
}

async function runJobs(fn: string, tag: string, count: number): Promise<void> {
  const client = await env.client();
  const ids = await Promise.all(Array.from({ length: count }, (_, n) => client.enqueue(fn, { tag, n })));
  await eventually(async () => {
    const [row] = await env.database.sql`
      select count(*)::int as done from jetfn.invocations
      where id in ${env.database.sql(ids.map((job) => job.id))} and status = 'succeeded'`;
    return row?.done === count || undefined;
  }, 30_000);
}

it("commits jobs that run together in shared transactions, each row audited under its own job", async () => {
  await runJobs("group-writer", "grouped", 200);
  const seen = await transactionsOf("grouped");
  expect(seen.rows).toBe(200);
  expect(seen.stamped).toBe(true);
  // 200 jobs at concurrency 8 over a few lanes share COMMITs. How many depends on load: a function
  // whose savepoints are held over 20 ms takes no lane (CommitGroups.takes); at load 20 this gave
  // 117 transactions, and 197 once. At least some must be shared, and the
  // stamp check above then covers rows of several jobs in one transaction.
  expect(seen.transactions).toBeLessThan(200);
});

it("gives the jobs of a sharedCommit: false function a transaction each", async () => {
  await runJobs("alone-writer", "alone", 40);
  const seen = await transactionsOf("alone");
  expect(seen.rows).toBe(40);
  expect(seen.transactions).toBe(40);
  const failed = await env.database.sql`
    select count(*)::int as failed from jetfn.invocations where function = 'alone-writer' and attempts > 1`;
  // In a shared transaction the second ON COMMIT DROP table of the same name would fail.
  expect(failed[0]?.failed).toBe(0);
});
