import { cp, mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { DEFAULT_MIGRATIONS_DIR, migrate } from "../../runtime/db/migrate";
import { createTestDatabase, type TestDatabase } from "../helpers/database";

// 0031 has the capture functions read their transaction id as txid_current(): a table attached
// before it must get the new functions from the migration, and its audit rows the same txid.
let database: TestDatabase;
let before: string;

beforeAll(async () => {
  database = await createTestDatabase({ empty: true });
  before = await mkdtemp(path.join(tmpdir(), "jetfn-migrations-"));
  for (const file of await readdir(DEFAULT_MIGRATIONS_DIR)) {
    if (file < "0031_") await cp(path.join(DEFAULT_MIGRATIONS_DIR, file), path.join(before, file));
  }
});

afterAll(async () => {
  await database?.drop();
  await rm(before, { recursive: true, force: true });
});

it("writes the functions of tables attached before it anew (attaching afresh a table whose functions have other names), and their rows keep the transaction's id", async () => {
  const { sql } = database;
  await migrate(sql, { directory: before });
  await sql`create table public.attached_early (id int primary key, v text)`;
  const sources = () => sql`
    select p.proname, p.prosrc like '%txid_current()%' as new_head
    from pg_trigger t join pg_proc p on p.oid = t.tgfoid
    where t.tgrelid = 'public.attached_early'::regclass and t.tgname <> 'jetfn_audit_truncate'
    order by p.proname`;
  expect((await sources()).map((row) => row.new_head)).toEqual([false, false, false]);
  // As after a restore from a dump: the table has another oid than its functions' names say.
  await sql`create table public.restored (id int primary key)`;
  const [restored] = await sql`select 'public.restored'::regclass::oid::text as oid`;
  await sql.unsafe(`alter function jetfn.capture_insert_${restored?.oid}() rename to capture_insert_1`);

  await migrate(sql);
  expect((await sources()).map((row) => row.new_head)).toEqual([true, true, true]);
  const [insertTrigger] = await sql`
    select p.proname, p.prosrc like '%txid_current()%' as new_head
    from pg_trigger t join pg_proc p on p.oid = t.tgfoid
    where t.tgrelid = 'public.restored'::regclass and t.tgname = 'jetfn_audit_insert'`;
  expect(insertTrigger).toEqual({ proname: `capture_insert_${restored?.oid}`, new_head: true });
  const [changed] = await sql.begin(async (tx) => {
    await tx`insert into public.attached_early values (1, 'a')`;
    await tx`update public.attached_early set v = 'b'`;
    await tx`delete from public.attached_early`;
    return tx`
      select count(*)::int as rows, bool_and(txid = pg_current_xact_id()::text::bigint) as this_transaction
      from jetfn.audit_log where table_name = 'attached_early'`;
  });
  expect(changed).toEqual({ rows: 3, this_transaction: true });
});
