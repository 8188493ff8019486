import { afterAll, beforeAll, expect, it } from "vitest";
import { createTestDatabase, type TestDatabase } from "../helpers/database";

// The hashed text of a row must tell every row apart. Format 1 joined the fields with
// concat_ws('|'), which skips NULLs: function, invocation id and attempt moved into db_user
// ('fn|inv|1|jetfn_runtime') gave the same text, so the edit left every seal valid.
let database: TestDatabase;

beforeAll(async () => {
  database = await createTestDatabase();
});

afterAll(async () => {
  await database?.drop();
});

const row = (fields: string) => `
  select jetfn.audit_row_text_v2(r) as v2, jetfn.audit_row_text(r) as v1
  from (select ${fields}) s, lateral (
    select (1, '2026-01-01T00:00:00Z'::timestamptz, 7, s.function, s.invocation_id, s.attempt, s.db_user,
            'public', 'notes', 'INSERT', '{"id":1}'::json, null::json, '{"id":1}'::json, null::text[])::jetfn.audit_log as r
  ) l`;

it("gives a row with its stamp moved into db_user a different text", async () => {
  const [stamped] = await database.sql.unsafe(
    row(
      `'ledger-add'::text as function, 'inv-1'::text as invocation_id, 1 as attempt, 'jetfn_runtime'::text as db_user`,
    ),
  );
  const [shifted] = await database.sql.unsafe(
    row(
      `null::text as function, null::text as invocation_id, null::integer as attempt, 'ledger-add|inv-1|1|jetfn_runtime'::text as db_user`,
    ),
  );
  expect(stamped?.v1).toBe(shifted?.v1);
  expect(stamped?.v2).not.toBe(shifted?.v2);
});

it("tells NULL from an empty string, and a separator inside a value from one between values", async () => {
  const [nullFunction] = await database.sql.unsafe(
    row(`null::text as function, 'a'::text as invocation_id, 1 as attempt, 'u'::text as db_user`),
  );
  const [emptyFunction] = await database.sql.unsafe(
    row(`''::text as function, 'a'::text as invocation_id, 1 as attempt, 'u'::text as db_user`),
  );
  const [commaBetween] = await database.sql.unsafe(
    row(`'f'::text as function, 'a'::text as invocation_id, 1 as attempt, 'u'::text as db_user`),
  );
  const [commaInside] = await database.sql.unsafe(
    row(`'f,a'::text as function, null::text as invocation_id, 1 as attempt, 'u'::text as db_user`),
  );
  const [pipeInside] = await database.sql.unsafe(
    row(`'f|a'::text as function, null::text as invocation_id, 1 as attempt, 'u'::text as db_user`),
  );
  expect(nullFunction?.v2).not.toBe(emptyFunction?.v2);
  expect(commaInside?.v2).not.toBe(commaBetween?.v2);
  expect(pipeInside?.v2).not.toBe(commaBetween?.v2);
});

it("seals new rows in format 2 and still verifies seals of format 1", { timeout: 300_000 }, async () => {
  await database.sql`create table notes (id serial primary key, body text)`;
  await database.sql`insert into notes (body) values ('a'), ('b')`;
  await sealOnce();
  // A seal made before format 2 existed: same rows, hashed with the old text.
  await database.sql`
    update jetfn.audit_seals s set format = 1,
      hash = (select h.hash from jetfn.audit_range_hash(s.previous_hash, s.after_txid, s.after_id, s.last_txid, s.last_id) h)
    where seq = 1`;
  // A row a function wrote (stamped), as the capture records it.
  await database.sql`
    insert into jetfn.audit_log (txid, function, invocation_id, attempt, db_user, schema_name, table_name, operation, pk, new_row)
    values (pg_current_xact_id()::text::bigint, 'ledger-add', 'inv-1', 1, 'jetfn_runtime', 'public', 'notes', 'INSERT',
            '{"id": 3}', '{"id": 3, "body": "c"}')`;
  await sealOnce();
  const seals = await database.sql`select seq::int, format::int from jetfn.audit_seals order by seq`;
  expect(seals).toEqual([
    { seq: 1, format: 1 },
    { seq: 2, format: 2 },
  ]);
  expect(await database.sql`select * from jetfn.verify_audit()`).toEqual([]);

  // The stamp-shifting edit on the format-2 seal breaks it.
  await database.sql`
    update jetfn.audit_log set db_user = concat_ws('|', function, invocation_id, attempt, db_user),
      function = null, invocation_id = null, attempt = null
    where new_row->>'body' = 'c'`;
  const [moved] = await database.sql`select db_user from jetfn.audit_log where new_row->>'body' = 'c'`;
  expect(moved?.db_user).toBe("ledger-add|inv-1|1|jetfn_runtime");
  const [broken] = await database.sql`select seq::int, problem from jetfn.verify_audit()`;
  expect(broken).toEqual({ seq: 2, problem: "audit rows were altered" });
});

/** Seals whatever has settled; other test files' transactions may hold rows back for a moment. */
async function sealOnce(): Promise<void> {
  const deadline = Date.now() + 240_000;
  for (;;) {
    const [row] = await database.sql`select jetfn.seal_audit(100) as sealed`;
    if ((row?.sealed as number) > 0) return;
    if (Date.now() > deadline) throw new Error("nothing could be sealed within 240s");
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}
