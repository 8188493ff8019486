import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, expect, it } from "vitest";
import { createTestEnvironment, eventually, type TestEnvironment } from "../helpers/environment";

// A handler that rewrites the audit stamp before it writes: before, its rows were audited as
// another function's invocation (or as an outside write with no function), and `jetfn audit`
// showed them so. Now the guard refuses the statements that set the stamp, and what it cannot see
// (a database function that sets it) is caught before COMMIT: the attempt fails with
// E_STATEMENT_REFUSED, its rows are rolled back, and the jobs sharing its transaction are kept.
const HOSTILE_SQL = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../fixtures/hostile-sql");
const BYSTANDERS = process.env.JETFN_FAULTS_FULL === "1" ? 200 : 40;

let env: TestEnvironment;

beforeAll(async () => {
  env = await createTestEnvironment();
  await env.database.sql.unsafe(`
    create table hostile_ledger (id serial primary key, tag text unique not null, attempt int);
    create function forge_stamp(f text, i text) returns text language sql
      as $$ select set_config('jetfn.function', f, true) || set_config('jetfn.invocation_id', i, true) $$;
  `);
});

afterAll(async () => {
  await env?.close();
});

function forgeries(victim: string): string[] {
  return [
    `select set_config('jetfn.function', 'ledger-add', true), set_config('jetfn.invocation_id', '${victim}', true)`,
    `set local jetfn.function = 'ledger-add'; set local jetfn.invocation_id = '${victim}'`,
    `select forge_stamp('ledger-add', '${victim}')`,
    "select forge_stamp('', '')",
  ];
}

it("never lets a handler's rows appear as another invocation's or as an outside write", {
  timeout: 180_000,
}, async () => {
  await env.startRuntime({ functionsDir: HOSTILE_SQL });
  const client = await env.client();
  const bystanders: string[] = [];
  const forgers: string[] = [];
  for (let i = 0; i < BYSTANDERS; i++) {
    const victim = (await client.enqueue("ledger-add", { tag: `l${i}` })).id;
    bystanders.push(victim);
    if (i % 4 === 0) {
      const statement = forgeries(victim)[(i / 4) % 4] as string;
      forgers.push((await client.enqueue("forge-stamp", { tag: `f${i}`, statement })).id);
    }
  }
  const call = await client
    .call("forge-stamp", { tag: "call", statement: `select forge_stamp('ledger-add', '${bystanders[0]}')` })
    .then(
      () => "succeeded",
      (error: { code?: string }) => error.code,
    );
  expect(call).toBe("E_STATEMENT_REFUSED");
  await eventually(async () => {
    const [row] = await env.database.sql`
      select count(*)::int as n from jetfn.invocations where status in ('succeeded', 'dead')`;
    return row?.n === bystanders.length + forgers.length;
  }, 120_000);
  const statuses = await env.database.sql<{ function: string; status: string; code: string | null; n: number }[]>`
    select function, status, error->>'code' as code, count(*)::int as n
    from jetfn.invocations group by 1, 2, 3 order by 1, 2, 3`;
  expect(statuses.map((row) => ({ ...row }))).toEqual([
    { function: "forge-stamp", status: "dead", code: "E_STATEMENT_REFUSED", n: forgers.length },
    { function: "ledger-add", status: "succeeded", code: null, n: bystanders.length },
  ]);
  const [forged] = await env.database.sql<{ n: number }[]>`
    select count(*)::int as n from hostile_ledger where tag like 'f%' or tag = 'call'`;
  expect(forged?.n).toBe(0);
  const audit = await env.database.sql<{ function: string | null; invocation_id: string | null; n: number }[]>`
    select function, invocation_id, count(*)::int as n from jetfn.audit_log
    where table_name = 'hostile_ledger' group by 1, 2`;
  expect(audit.every((row) => row.function === "ledger-add" && row.n === 1)).toBe(true);
  expect(audit.map((row) => row.invocation_id).sort()).toEqual([...bystanders].sort());
});
