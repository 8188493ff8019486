import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, expect, it } from "vitest";
import { createTestEnvironment, eventually, type TestEnvironment } from "../helpers/environment";

// A handler's SQL runs as the runtime's role, which records invocations. Before, a handler could
// record another job as finished before it ran (through jetfn.complete_invocation or by writing
// jetfn.invocations): the real job was then fenced out and acknowledged without running, lost.
// Now the guard refuses any handler statement naming jetfn's schema: the forging attempt fails
// with E_STATEMENT_REFUSED and the victim runs.
const HOSTILE_SQL = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../fixtures/hostile-sql");

let env: TestEnvironment;

beforeAll(async () => {
  env = await createTestEnvironment();
  await env.database.sql.unsafe(
    "create table hostile_ledger (id serial primary key, tag text unique not null, attempt int)",
  );
});

afterAll(async () => {
  await env?.close();
});

const forgeries = (victim: string) => [
  `select jetfn.complete_invocation('${victim}', 'ledger-add', 1, '{}'::jsonb, 'null'::jsonb, now(), now(), 1, null)`,
  `set local search_path = jetfn, public; select complete_invocation('${victim}', 'ledger-add', 1, '{}'::jsonb, 'null'::jsonb, now(), now(), 1, null)`,
];

it("never lets a handler record another job as finished before it runs", { timeout: 120_000 }, async () => {
  await env.startRuntime({ functionsDir: HOSTILE_SQL });
  const client = await env.client();
  const victims = ["victim-0001", "victim-0002"];
  for (const [index, victim] of victims.entries()) {
    const statement = forgeries(victim)[index] as string;
    const forger = await client.enqueueAndWait("forge-stamp", { tag: `forger-${index}`, statement }).then(
      () => "succeeded",
      (error: { code?: string }) => error.code,
    );
    expect(forger).toBe("E_STATEMENT_REFUSED");
  }
  for (const [index, victim] of victims.entries()) {
    await client.enqueue("ledger-add", { tag: `victim-${index}` }, { id: victim });
  }
  await eventually(async () => {
    const rows = await env.database.sql`select tag from hostile_ledger where tag like 'victim-%'`;
    return rows.length === victims.length;
  }, 60_000);
  const records = await env.database.sql<{ id: string; status: string }[]>`
    select id, status from jetfn.invocations where id like 'victim-%' order by id`;
  expect(records.map((row) => ({ ...row }))).toEqual(victims.map((id) => ({ id, status: "succeeded" })));
});
