import { drizzle } from "drizzle-orm/postgres-js";
import { afterAll, beforeAll, expect, it } from "vitest";
import { checkChain } from "../../runtime/audit/audit-chain-check";
import { SELECT_SEALS, type SealRow, toSealAnchor } from "../../runtime/audit/audit-seal-record";
import { createTestDatabase, type TestDatabase } from "../helpers/database";

// The hashed text of a row must tell every row apart. Format 1 joined the fields with
// concat_ws('|'), which skips NULLs: function, invocation id and attempt moved into db_user
// ('fn|inv|1|jetfn_runtime') gave the same text, so the edit left every seal valid. Format 2 has no
// durable step (migration 0033): a row moved to another step of its invocation kept its text.
let database: TestDatabase;

beforeAll(async () => {
  database = await createTestDatabase();
});

afterAll(async () => {
  await database?.drop();
});

const row = (fields: string, step = "null::text") => `
  select jetfn.audit_row_text_v3(r) as v3, jetfn.audit_row_text_v2(r) as v2, jetfn.audit_row_text(r) as v1
  from (select ${fields}) s, lateral (
    select (1, '2026-01-01T00:00:00Z'::timestamptz, 7, s.function, s.invocation_id, s.attempt, s.db_user,
            'public', 'notes', 'INSERT', '{"id":1}'::json, null::json, '{"id":1}'::json, null::text[], ${step})::jetfn.audit_log as r
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
  expect(stamped?.v3).not.toBe(shifted?.v3);
});

it("gives a row written by another step, or by none, a different text", async () => {
  const stamp = `'ledger-add'::text as function, 'inv-1'::text as invocation_id, 1 as attempt, 'jetfn_runtime'::text as db_user`;
  const [reserve] = await database.sql.unsafe(row(stamp, "'reserve'::text"));
  const [charge] = await database.sql.unsafe(row(stamp, "'charge'::text"));
  const [none] = await database.sql.unsafe(row(stamp));
  const [empty] = await database.sql.unsafe(row(stamp, "''::text"));
  expect(reserve?.v2).toBe(charge?.v2);
  expect(new Set([reserve?.v3, charge?.v3, none?.v3, empty?.v3]).size).toBe(4);
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
  expect(nullFunction?.v3).not.toBe(emptyFunction?.v3);
  expect(commaInside?.v3).not.toBe(commaBetween?.v3);
});

it("seals new rows in format 3 and still verifies seals of formats 1 and 2", { timeout: 300_000 }, async () => {
  await database.sql`create table notes (id serial primary key, body text)`;
  await database.sql`insert into notes (body) values ('a'), ('b')`;
  await sealOnce();
  await database.sql`insert into notes (body) values ('c')`;
  await sealOnce();
  // Seals made before formats 2 and 3 existed: same rows, hashed with the older texts.
  await database.sql`
    update jetfn.audit_seals s set format = 1,
      hash = (select h.hash from jetfn.audit_range_hash(s.previous_hash, s.after_txid, s.after_id, s.last_txid, s.last_id) h)
    where seq = 1`;
  await database.sql`
    update jetfn.audit_seals s set format = 2,
      previous_hash = (select hash from jetfn.audit_seals where seq = 1),
      hash = (select h.hash from jetfn.audit_range_hash_v2((select hash from jetfn.audit_seals where seq = 1),
                                                           s.after_txid, s.after_id, s.last_txid, s.last_id) h)
    where seq = 2`;
  // A row a durable step wrote (stamped), as the capture records it.
  await database.sql`
    insert into jetfn.audit_log (txid, function, invocation_id, attempt, step, db_user, schema_name, table_name, operation, pk, new_row)
    values (pg_current_xact_id()::text::bigint, 'ledger-add', 'inv-1', 1, 'reserve', 'jetfn_runtime', 'public', 'notes', 'INSERT',
            '{"id": 4}', '{"id": 4, "body": "d"}')`;
  await sealOnce();
  const seals = await database.sql`select seq::int, format::int from jetfn.audit_seals order by seq`;
  expect(seals).toEqual([
    { seq: 1, format: 1 },
    { seq: 2, format: 2 },
    { seq: 3, format: 3 },
  ]);
  expect(await database.sql`select * from jetfn.verify_audit()`).toEqual([]);
  // `jetfn audit verify` recomputes each format with its own text, without the database's functions.
  const db = drizzle(database.sql);
  const anchors = (await database.sql.unsafe<SealRow[]>(`${SELECT_SEALS} order by seq`)).map(toSealAnchor);
  expect(await checkChain(db, anchors)).toBeUndefined();

  // Moving the row to another step of its invocation breaks the format-3 seal.
  await database.sql`update jetfn.audit_log set step = 'charge' where new_row->>'body' = 'd'`;
  const [moved] = await database.sql`select seq::int, problem from jetfn.verify_audit()`;
  expect(moved).toEqual({ seq: 3, problem: "audit rows were altered" });
  expect(await checkChain(db, anchors)).toMatchObject({ seq: 3, problem: "audit rows were altered" });
  await database.sql`update jetfn.audit_log set step = 'reserve' where new_row->>'body' = 'd'`;
  expect(await database.sql`select * from jetfn.verify_audit()`).toEqual([]);

  // A row sealed in format 2 was written before rows had a step: one given a step since was altered,
  // though format 2's text does not hash the step.
  await database.sql`update jetfn.audit_log set step = 'manual-approval' where new_row->>'body' = 'c'`;
  expect(await database.sql`select seq::int, problem from jetfn.verify_audit()`).toEqual([
    { seq: 2, problem: "audit rows were altered" },
  ]);
  expect(await checkChain(db, anchors)).toMatchObject({ seq: 2, problem: "audit rows were altered" });
  await database.sql`update jetfn.audit_log set step = null where new_row->>'body' = 'c'`;
  expect(await checkChain(db, anchors)).toBeUndefined();
  // An anchor of a format this version does not know (a newer jetfn's) is said to be that, not a tampering.
  const newer = anchors.map((anchor) => (anchor.seq === 3 ? { ...anchor, format: 4 } : anchor));
  expect(await checkChain(db, newer)).toMatchObject({
    seq: 3,
    problem: "the seal is of format 4, which this version of jetfn does not know",
  });

  // And an edit of the format-2 seal's row breaks that seal.
  await database.sql`update jetfn.audit_log set db_user = 'someone' where new_row->>'body' = 'c'`;
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
