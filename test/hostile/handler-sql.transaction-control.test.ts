import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, expect, it } from "vitest";
import { createTestEnvironment, eventually, type TestEnvironment } from "../helpers/environment";

// A handler that ends its transaction (ROLLBACK, COMMIT, END, a savepoint of the runtime's) among
// other jobs sharing transactions with it: before, the ROLLBACK dropped earlier members' writes
// while their records said succeeded (lost), the rows after it committed with no stamp, and a
// COMMIT kept a failed attempt's rows (applied twice). Now every such statement is refused: the
// attempt fails alone with E_STATEMENT_REFUSED and nothing else changes.
const FULL = process.env.JETFN_FAULTS_FULL === "1";
const HOSTILE_SQL = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../fixtures/hostile-sql");
const BYSTANDERS = FULL ? 400 : 120;

const ESCAPES = [
  "ROLLBACK",
  "COMMIT",
  "/* a comment */ rollBack",
  "-- a line comment\n  commit work",
  "select 1; rollback",
  "select 'a string; rollback'; end",
  "select $body$ ; $body$; abort",
  "release savepoint jetfn_job_1",
  "rollback to savepoint jetfn_job_1",
  "commit; begin",
];

let env: TestEnvironment;

beforeAll(async () => {
  env = await createTestEnvironment();
  await env.database.sql`create table hostile_ledger (id serial primary key, tag text unique not null, attempt int)`;
});

afterAll(async () => {
  await env?.close();
});

it("refuses transaction control; other jobs are neither lost nor doubled, no row goes unstamped", {
  timeout: 240_000,
}, async () => {
  await env.startRuntime({ functionsDir: HOSTILE_SQL });
  const client = await env.client();
  const hostile: string[] = [];
  const bystanders: string[] = [];
  const every = Math.floor(BYSTANDERS / (ESCAPES.length * 2));
  let escapeIndex = 0;
  for (let i = 0; i < BYSTANDERS; i++) {
    bystanders.push((await client.enqueue("ledger-add", { tag: `l${i}` })).id);
    if (i % every === 0 && escapeIndex < ESCAPES.length * 2) {
      const statement = ESCAPES[escapeIndex % ESCAPES.length] as string;
      const input = { tag: `h${escapeIndex}`, statement, throwOnFirst: escapeIndex >= ESCAPES.length };
      hostile.push((await client.enqueue("sql-escape", input)).id);
      escapeIndex++;
    }
  }
  const total = bystanders.length + hostile.length;
  await eventually(async () => {
    const [row] = await env.database.sql`
      select count(*)::int as n from jetfn.invocations where status in ('succeeded', 'dead')`;
    return row?.n === total;
  }, 180_000);
  const statuses = await env.database.sql<{ function: string; status: string; code: string | null; n: number }[]>`
    select function, status, error->>'code' as code, count(*)::int as n
    from jetfn.invocations group by 1, 2, 3 order by 1, 2, 3`;
  expect(statuses.map((row) => ({ ...row }))).toEqual([
    { function: "ledger-add", status: "succeeded", code: null, n: bystanders.length },
    { function: "sql-escape", status: "dead", code: "E_STATEMENT_REFUSED", n: hostile.length },
  ]);
  const [rows] = await env.database.sql<{ bystander: number; hostile: number; doubled: number }[]>`
    select count(*) filter (where tag like 'l%')::int as bystander,
           count(*) filter (where tag like 'h%')::int as hostile,
           (count(*) - count(distinct tag))::int as doubled
    from hostile_ledger`;
  expect({ ...rows }).toEqual({ bystander: bystanders.length, hostile: 0, doubled: 0 });
  const audit = await env.database.sql<{ function: string | null; n: number }[]>`
    select function, count(*)::int as n from jetfn.audit_log where table_name = 'hostile_ledger' group by 1`;
  expect(audit.map((row) => ({ ...row }))).toEqual([{ function: "ledger-add", n: bystanders.length }]);
});
