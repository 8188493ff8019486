import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, expect, it } from "vitest";
import { createTestEnvironment, eventually, type TestEnvironment } from "../helpers/environment";

// Transaction control the statement guard once read differently from Postgres: a line comment
// that Postgres ends at a carriage return (the guard read it to the next newline), so the COMMIT
// or ROLLBACK after it reached the server. In a shared transaction that committed earlier members'
// writes without their records (each then ran again alone: applied twice) or dropped them (lost).
const FULL = process.env.JETFN_FAULTS_FULL === "1";
const HOSTILE_SQL = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../fixtures/hostile-sql");
const BYSTANDERS = FULL ? 400 : 90;

const ESCAPES = ["select 1 --\r; commit", "select 1 -- x\r; rollback", "select 1 --\r; end"];

let env: TestEnvironment;

beforeAll(async () => {
  env = await createTestEnvironment();
  await env.database.sql`create table hostile_ledger (id serial primary key, tag text unique not null, attempt int)`;
});

afterAll(async () => {
  await env?.close();
});

it("refuses transaction control after a carriage-return comment; other jobs are neither lost nor doubled, no row goes unstamped", {
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
  const [rows] = await env.database.sql<{ bystander: number; hostile: number; doubled: number }[]>`
    select count(*) filter (where tag like 'l%')::int as bystander,
           count(*) filter (where tag like 'h%')::int as hostile,
           (count(*) - count(distinct tag))::int as doubled
    from hostile_ledger`;

  const audit = await env.database.sql<{ function: string | null; n: number }[]>`
    select function, count(*)::int as n from jetfn.audit_log where table_name = 'hostile_ledger' group by 1`;
  // One comparison, so a failure shows what was lost, doubled and unstamped at once.
  expect({
    statuses: statuses.map((row) => ({ ...row })),
    rows: { ...rows },
    audit: audit.map((row) => ({ ...row })),
  }).toEqual({
    statuses: [
      { function: "ledger-add", status: "succeeded", code: null, n: bystanders.length },
      { function: "sql-escape", status: "dead", code: "E_STATEMENT_REFUSED", n: hostile.length },
    ],
    rows: { bystander: bystanders.length, hostile: 0, doubled: 0 },
    audit: [{ function: "ledger-add", n: bystanders.length }],
  });
});
