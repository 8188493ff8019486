import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, expect, it } from "vitest";
import { createTestEnvironment, eventually, type TestEnvironment } from "../helpers/environment";

// A handler that changes its session (read-only by default, another search_path, a session
// advisory lock): before, the pooled session kept it, so later invocations of other functions
// failed ("cannot execute INSERT in a read-only transaction") or wrote into another tenant's
// schema. Now the guard refuses the statements that do it, and each session is reset after every
// transaction, so even a database function that does it (beyond the guard's sight) leaks nothing.
const HOSTILE_SQL = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../fixtures/hostile-sql");
const PROBES = process.env.JETFN_FAULTS_FULL === "1" ? 120 : 30;

const LEAKS = [
  "set session default_transaction_read_only = on",
  "set search_path = tenant_b, public",
  "select leak_read_only()",
  "select leak_search_path()",
  "select leak_lock()",
];

let env: TestEnvironment;

beforeAll(async () => {
  env = await createTestEnvironment();
  await env.database.sql.unsafe(`
    create table hostile_ledger (id serial primary key, tag text unique not null, attempt int);
    create schema tenant_b;
    create table tenant_b.hostile_ledger (id serial primary key, tag text unique not null, attempt int);
    create function leak_read_only() returns text language sql
      as $$ select set_config('default_transaction_read_only', 'on', false) $$;
    create function leak_search_path() returns text language sql
      as $$ select set_config('search_path', 'tenant_b, public', false) $$;
    create function leak_lock() returns void language sql as $$ select pg_advisory_lock(4242) $$;
  `);
});

afterAll(async () => {
  await env?.close();
});

it("starts every invocation on a clean session, whatever an earlier one did to it", { timeout: 180_000 }, async () => {
  // Two connections: the probes are sure to land on the sessions the leaks ran on.
  await env.startRuntime({ functionsDir: HOSTILE_SQL, databasePoolSize: 2 });
  const client = await env.client();
  const [fresh] = await env.database.sql<
    { search_path: string }[]
  >`select current_setting('search_path') as search_path`;
  // Refused by the guard (the call fails, the job dies) or let through (a database function).
  for (const statement of LEAKS) {
    await client.call("session-state", { statement }).catch(() => undefined);
    const job = await client.enqueue("session-state", { statement });
    await client.result(job.id).catch(() => undefined);
  }
  const calls = await Promise.allSettled(
    Array.from({ length: PROBES }, (_, i) => client.call("session-probe", { tag: `call-${i}` })),
  );
  const jobs = await Promise.all(
    Array.from({ length: PROBES }, async (_, i) => (await client.enqueue("session-probe", { tag: `job-${i}` })).id),
  );
  const results = [...calls.map((call) => (call.status === "fulfilled" ? call.value : String(call.reason)))];
  for (const id of jobs) results.push(await client.result(id).catch((error: unknown) => String(error)));
  const expected = { search_path: fresh?.search_path, read_only: "off", user: expect.any(String) };
  expect(results).toEqual(Array.from({ length: PROBES * 2 }, () => expected));
  const [elsewhere] = await env.database.sql<{ n: number }[]>`select count(*)::int as n from tenant_b.hostile_ledger`;
  expect(elsewhere?.n).toBe(0);
  await eventually(async () => {
    const locks = await env.database.sql`select 1 from pg_locks where locktype = 'advisory' and objid = 4242`;
    return locks.length === 0;
  }, 10_000);
});
