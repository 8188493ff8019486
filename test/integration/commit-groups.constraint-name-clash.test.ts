import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Runtime } from "../../runtime/runtime";
import { createTestEnvironment, eventually, type TestEnvironment } from "../helpers/environment";

// A later job of a shared transaction starts from the statements jetfn.constraint_modes() returns
// (constraint-modes.ts): SET CONSTRAINTS ALL DEFERRED, then by name the deferrable constraints
// declared INITIALLY IMMEDIATE. Names are unique per table, not per schema, and SET CONSTRAINTS
// s.name sets every constraint of that name in the schema: a key declared INITIALLY DEFERRED that
// shares its name with another table's INITIALLY IMMEDIATE key was made immediate for the later
// jobs of a shared transaction. A handler that inserts a child before its parent then succeeded
// alone or first in a transaction, and failed as a later member. Now no statement can put such
// modes back, so those transactions hold one job each (and a warning names the clash).
const CLASH_FUNCTIONS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../fixtures/constraint-clash");
const JOBS = 40;
/**
 * Two lanes (commitLanes of a pool of 5) for the function's 8 handlers: jobs wait for a lane, so the
 * runtime is under load and its lanes linger for company. With a lane per handler, whether any job
 * waited (and transactions were shared) was up to the machine's timing, and a slow one shared none.
 */
const RUNTIME = { functionsDir: CLASH_FUNCTIONS, databasePoolSize: 5 };

let env: TestEnvironment;
let runtime: Runtime & { logs: { matching(text: string): Record<string, unknown>[] } };

beforeAll(async () => {
  env = await createTestEnvironment();
  await env.database.sql.unsafe(`
    create table clash_parents (id text primary key);
    create table clash_children (id text primary key,
      parent text constraint clash_parent_fk references clash_parents deferrable initially deferred);
  `);
  // Started once so that the streams exist; each burst is queued while no runtime runs.
  runtime = await env.startRuntime(RUNTIME, { laterTestsUseIt: true });
});

afterAll(async () => {
  await env?.close();
});

/**
 * Queues `JOBS` jobs while no runtime runs, then starts one: they wait for it together and share
 * transactions even on a loaded machine (enqueued to a running runtime, they may arrive one by one).
 */
async function queuedBurst(tag: string): Promise<string[]> {
  await runtime.stop();
  const client = await env.client();
  const jobs = await Promise.all(
    Array.from({ length: JOBS }, (_, n) => client.enqueue("clash-child", { tag: `${tag} ${n}` })),
  );
  runtime = await env.startRuntime(RUNTIME, { laterTestsUseIt: true });
  const ids = jobs.map((job) => job.id);
  await settled(ids);
  return ids;
}

/** Enqueues `JOBS` jobs to the running runtime at once and waits until each succeeded or died. */
async function burst(tag: string): Promise<string[]> {
  const client = await env.client();
  const jobs = await Promise.all(
    Array.from({ length: JOBS }, (_, n) => client.enqueue("clash-child", { tag: `${tag} ${n}` })),
  );
  const ids = jobs.map((job) => job.id);
  await settled(ids);
  return ids;
}

async function settled(ids: string[]): Promise<void> {
  await eventually(async () => {
    const [row] = await env.database.sql<{ n: number }[]>`
      select count(*)::int as n from jetfn.invocations
      where id in ${env.database.sql(ids)} and status in ('succeeded', 'dead')`;
    return row?.n === ids.length;
  }, 60_000);
}

/** How the jobs `ids` ended, and in how many transactions their child rows were committed. */
async function outcome(ids: string[]): Promise<{ statuses: Record<string, number>; transactions: number }> {
  const statuses = await env.database.sql<{ status: string; code: string | null; n: number }[]>`
    select status, error ->> 'code' as code, count(*)::int as n from jetfn.invocations
    where id in ${env.database.sql(ids)} group by 1, 2`;
  const [shared] = await env.database.sql<{ transactions: number }[]>`
    select count(distinct txid)::int as transactions from jetfn.audit_log
    where table_name = 'clash_children' and operation = 'INSERT' and invocation_id in ${env.database.sql(ids)}`;
  return {
    statuses: Object.fromEntries(statuses.map((row) => [`${row.status}${row.code ? ` ${row.code}` : ""}`, row.n])),
    transactions: shared?.transactions ?? 0,
  };
}

describe("two deferrable keys of one schema share a name, one INITIALLY DEFERRED, one INITIALLY IMMEDIATE", () => {
  it("shares transactions between jobs that rely on their deferred key while its name is its own", async () => {
    // What the next test shows depends on jobs like these sharing transactions; how many share is
    // up to the machine's load, so a burst that shared too few is followed by another.
    for (let round = 1; ; round++) {
      const seen = await outcome(await queuedBurst(`alone ${round}`));
      expect(seen.statuses).toEqual({ succeeded: JOBS });
      if (seen.transactions < JOBS * 0.8) break;
      if (round === 5)
        throw new Error(`${round} bursts of ${JOBS} jobs shared no transactions enough (last: ${seen.transactions})`);
    }
  }, 150_000);

  it("runs every job that relies on the deferred key to success, whatever transaction it lands in", async () => {
    await env.database.sql.unsafe(`create table clash_strict (id text primary key,
      parent text constraint clash_parent_fk references clash_parents deferrable initially immediate)`);
    const seen = await outcome(await queuedBurst("clash"));
    expect(seen.statuses).toEqual({ succeeded: JOBS });
    // No statement puts the two keys back to their declared modes: one job per transaction.
    expect(seen.transactions).toBe(JOBS);
    // Said once, naming the clash, so an operator knows why the runtime stopped sharing transactions.
    expect(runtime.logs.matching("share a name with different declared modes")).toMatchObject([
      { level: 40, clashingConstraints: ["public.clash_parent_fk"] },
    ]);
    // The strict key is still checked at its statement.
    await expect(
      env.database.sql`insert into clash_strict (id, parent) values ('orphan', 'nobody')`,
    ).rejects.toMatchObject({ code: "23503" });
  }, 90_000);

  it("shares transactions again once the clash is gone", async () => {
    await env.database.sql.unsafe("drop table clash_strict");
    let round = 0;
    await eventually(async () => {
      const seen = await outcome(await burst(`mended ${++round}`));
      expect(seen.statuses).toEqual({ succeeded: JOBS });
      return seen.transactions < JOBS || undefined;
    }, 60_000);
    expect(runtime.logs.matching("share a name with different modes any more")).toHaveLength(1);
  }, 90_000);
});
