import { readFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from "vitest";
import { urlAs } from "../helpers/database-url";
import { createTestEnvironment, eventually, type TestEnvironment } from "../helpers/environment";

// The declared constraint modes (jetfn.constraint_modes(), see constraint-modes.ts) were read in
// the message that opened a shared transaction. When that read failed (EXECUTE revoked from the
// runtime's role, the function replaced by one that raises, a statement timeout), it doomed the
// transaction, every member ran again alone, and the next transaction read again and was doomed
// again: one bad catalog state failed every shared transaction. Now they are read beside the
// jobs' transactions, on the pool, and a failed read only keeps each transaction to one job.

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const ROLES_SQL = path.join(ROOT, "schema/roles.sql");
const MODES_MIGRATION = path.join(ROOT, "schema/migrations/0030_jetfn_constraint_mode_clashes.sql");

const RAISING = `create or replace function jetfn.constraint_modes() returns text language plpgsql as $$
  begin raise exception 'the constraint modes are out of order'; end $$`;
/** Longer than the read may take (constraint-modes.ts): it times out. */
const HANGING = `create or replace function jetfn.constraint_modes() returns text language plpgsql as $$
  begin perform pg_sleep(30); return ''; end $$`;

let env: TestEnvironment;

beforeAll(async () => {
  env = await createTestEnvironment();
  await env.database.sql.unsafe(
    "create table group_rows (id bigserial primary key, tag text not null, n integer not null, invocation text not null)",
  );
  await env.database.sql.unsafe(await readFile(ROLES_SQL, "utf8"));
});

afterAll(async () => {
  await env?.close();
});

/** The function as its latest migration declares it (with the one it calls, as it was). */
async function declaredFunction(): Promise<string> {
  return (await readFile(MODES_MIGRATION, "utf8")).replace("create function", "create or replace function");
}

/** How the audited inserts of one tag's jobs were committed. */
async function transactionsOf(tag: string): Promise<{ rows: number; transactions: number; stamped: boolean }> {
  const [row] = await env.database.sql<{ rows: number; transactions: number; stamped: boolean }[]>`
    select count(*)::int as rows, count(distinct a.txid)::int as transactions,
           coalesce(bool_and(a.invocation_id = r.invocation and a.function = 'group-writer'), false) as stamped
    from jetfn.audit_log a join group_rows r on a.pk ->> 'id' = r.id::text
    where a.table_name = 'group_rows' and a.operation = 'INSERT' and r.tag = ${tag}`;
  return row as { rows: number; transactions: number; stamped: boolean };
}

/** Enqueues `count` jobs of group-writer at once and waits until all succeeded; their ids. */
async function runBurst(tag: string, count: number): Promise<string[]> {
  const client = await env.client();
  const jobs = await Promise.all(Array.from({ length: count }, (_, n) => client.enqueue("group-writer", { tag, n })));
  const ids = jobs.map((job) => job.id);
  await eventually(async () => {
    const [row] = await env.database.sql`
      select count(*)::int as done from jetfn.invocations
      where id in ${env.database.sql(ids)} and status = 'succeeded'`;
    return row?.done === count || undefined;
  }, 30_000);
  return ids;
}

describe.each([
  {
    breakage: "EXECUTE on jetfn.constraint_modes() is revoked from the runtime's role",
    tag: "revoked",
    breakIt: "revoke execute on function jetfn.constraint_modes() from public, jetfn_runtime",
    fixIt: async () => "grant execute on function jetfn.constraint_modes() to jetfn_runtime",
  },
  {
    breakage: "jetfn.constraint_modes() is replaced by a function that raises",
    tag: "raising",
    breakIt: RAISING,
    fixIt: declaredFunction,
  },
  {
    breakage: "jetfn.constraint_modes() is replaced by a function that does not answer",
    tag: "hanging",
    breakIt: HANGING,
    fixIt: declaredFunction,
  },
])("when $breakage", ({ tag, breakIt, fixIt }) => {
  it("runs every job once, in a transaction of its own, and shares transactions again once it is mended", async () => {
    await env.database.sql.unsafe(breakIt);
    // Mended even when the test fails, so the next case starts from a working function.
    onTestFinished(async () => {
      await env.database.sql.unsafe(await fixIt());
    });
    const runtime = await env.startRuntime({ databaseUrl: urlAs(env.database.url, "jetfn_runtime") });

    // (a) Broken: every job commits at its first run, with its audit row, one job per transaction.
    const ids = await runBurst(`${tag} broken`, 40);
    expect(runtime.logs.matching("The shared transaction did not commit").length).toBe(0);
    const [attempts] = await env.database.sql`
      select max(attempts)::int as most from jetfn.invocations where id in ${env.database.sql(ids)}`;
    expect(attempts?.most).toBe(1);
    const broken = await transactionsOf(`${tag} broken`);
    expect(broken).toEqual({ rows: 40, transactions: 40, stamped: true });
    // Said once for the whole streak of failed reads, with the error (a read that hangs ends at its timeout).
    const failure = "Could not read the declared constraint modes";
    await eventually(() => runtime.logs.matching(failure).length > 0, 15_000);
    expect(runtime.logs.matching(failure)).toMatchObject([{ level: 40, err: { message: expect.any(String) } }]);

    // (b) Mended: within the back-off, bursts share transactions again, each row under its own job.
    await env.database.sql.unsafe(await fixIt());
    let round = 0;
    await eventually(async () => {
      const burst = `${tag} mended ${++round}`;
      await runBurst(burst, 40);
      const seen = await transactionsOf(burst);
      expect(seen).toMatchObject({ rows: 40, stamped: true });
      return seen.transactions < 40 || undefined;
    }, 60_000);
    expect(runtime.logs.matching("The shared transaction did not commit").length).toBe(0);
    expect(runtime.logs.matching("Read the declared constraint modes again")).toHaveLength(1);
  }, 120_000);
});
