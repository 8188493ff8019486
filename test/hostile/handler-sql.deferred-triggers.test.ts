import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, expect, it } from "vitest";
import type { Runtime } from "../../runtime/runtime";
import { createTestEnvironment, eventually, type TestEnvironment } from "../helpers/environment";

// Deferred constraint triggers fire as their transaction commits. Before, that was after the check
// that every audit row carries its job's stamp, and in a shared transaction (group commit) under the
// stamp of its last job: an honest app's deferred trigger had its rows audited as whichever job
// happened to commit the group, and one that rewrote the stamp (database code a handler reaches by
// writing a row) committed rows in another job's name. Now each job's deferred constraints fire at
// the end of its own part, under its stamp and before the check: the rows are its own, and a forgery
// fails its attempt with E_STATEMENT_REFUSED while the jobs it shared a transaction with commit.
const DEFERRED_SQL = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../fixtures/deferred-sql");
const FULL = process.env.JETFN_FAULTS_FULL === "1";
const GROUPED = FULL ? 400 : 80;
const ALONE = FULL ? 100 : 20;
const BYSTANDERS = FULL ? 200 : 40;

let env: TestEnvironment;
let runtime: Runtime;

beforeAll(async () => {
  env = await createTestEnvironment();
  await env.database.sql.unsafe(`
    create table deferred_sources (id text primary key);
    create table deferred_effects (id bigserial primary key, source text not null);
    create function note_deferred_source() returns trigger language plpgsql as $$
      begin insert into deferred_effects (source) values (new.id); return null; end $$;
    create constraint trigger note_source after insert on deferred_sources
      deferrable initially deferred for each row execute function note_deferred_source();

    create table forged_sources (id text primary key, victim text not null);
    create function forge_deferred_source() returns trigger language plpgsql as $$
      begin
        perform set_config('jetfn.function', 'deferred-source', true);
        perform set_config('jetfn.invocation_id', new.victim, true);
        insert into deferred_effects (source) values (new.id);
        return null;
      end $$;
    create constraint trigger forge_source after insert on forged_sources
      deferrable initially deferred for each row execute function forge_deferred_source();
  `);
  runtime = await env.startRuntime({ functionsDir: DEFERRED_SQL });
});

afterAll(async () => {
  await env?.close();
});

/** Waits until every job of `ids` is succeeded or dead. */
async function settled(ids: string[]): Promise<void> {
  await eventually(async () => {
    const [row] = await env.database.sql<{ n: number }[]>`
      select count(*)::int as n from jetfn.invocations
      where id in ${env.database.sql(ids)} and status in ('succeeded', 'dead')`;
    return row?.n === ids.length;
  }, 120_000);
}

/** Source row -> the function and invocation its deferred_effects row is audited under. */
async function effectsAudit(): Promise<Map<string, string>> {
  const rows = await env.database.sql<{ source: string; function: string | null; invocation: string | null }[]>`
    select new_row ->> 'source' as source, function, invocation_id as invocation from jetfn.audit_log
    where table_name = 'deferred_effects' and operation = 'INSERT'`;
  return new Map(rows.map((row) => [row.source, `${row.function}/${row.invocation}`]));
}

it("audits every row a deferred trigger writes under the job whose statement queued it, grouped or alone", {
  timeout: 180_000,
}, async () => {
  // Queued while no runtime runs, so that they wait for it together and share transactions even on
  // a loaded machine (enqueued to a running runtime, they may arrive one by one and commit alone).
  await runtime.stop();
  const client = await env.client();
  const jobs = new Map<string, string>();
  const enqueue = async (fn: string, tag: string): Promise<void> => {
    jobs.set(tag, `${fn}/${(await client.enqueue(fn, { tag })).id}`);
  };
  await Promise.all([
    ...Array.from({ length: GROUPED }, (_, n) => enqueue("deferred-source", `g${n}`)),
    ...Array.from({ length: ALONE }, (_, n) => enqueue("deferred-source-alone", `a${n}`)),
  ]);
  runtime = await env.startRuntime({ functionsDir: DEFERRED_SQL }, { laterTestsUseIt: true });
  await settled([...jobs.values()].map((job) => job.split("/")[1] as string));
  const audited = await effectsAudit();
  expect(new Map([...audited].filter(([source]) => jobs.has(source)))).toEqual(jobs);
  // The test shows something only if jobs did share transactions.
  const [shared] = await env.database.sql<{ transactions: number }[]>`
    select count(distinct txid)::int as transactions from jetfn.audit_log
    where table_name = 'deferred_sources' and function = 'deferred-source'`;
  expect(shared?.transactions).toBeLessThan(GROUPED * 0.8);
});

it("never commits a row a deferred trigger stamped as another job; the jobs sharing its transaction commit", {
  timeout: 180_000,
}, async () => {
  const client = await env.client();
  const bystanders = new Map<string, string>();
  const forgers: string[] = [];
  for (let i = 0; i < BYSTANDERS; i++) {
    const victim = (await client.enqueue("deferred-source", { tag: `b${i}` })).id;
    bystanders.set(`b${i}`, `deferred-source/${victim}`);
    if (i % 4 === 0) forgers.push((await client.enqueue("deferred-forge", { tag: `f${i}`, victim })).id);
  }
  await settled([...[...bystanders.values()].map((job) => job.split("/")[1] as string), ...forgers]);
  const statuses = await env.database.sql<{ function: string; status: string; code: string | null; n: number }[]>`
    select function, status, error->>'code' as code, count(*)::int as n from jetfn.invocations
    where id in ${env.database.sql(forgers)} or function = 'deferred-forge'
    group by 1, 2, 3 order by 1, 2, 3`;
  expect(statuses.map((row) => ({ ...row }))).toEqual([
    { function: "deferred-forge", status: "dead", code: "E_STATEMENT_REFUSED", n: forgers.length },
  ]);
  const [forged] = await env.database.sql<{ n: number }[]>`select count(*)::int as n from forged_sources`;
  expect(forged?.n).toBe(0);
  const audited = await effectsAudit();
  expect([...audited.keys()].filter((source) => source.startsWith("f"))).toEqual([]);
  expect(new Map([...audited].filter(([source]) => bystanders.has(source)))).toEqual(bystanders);
});
