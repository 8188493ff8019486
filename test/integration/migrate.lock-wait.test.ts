import { cp, mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { DEFAULT_MIGRATIONS_DIR, migrate } from "../../runtime/db/migrate";
import { createTestDatabase, type TestDatabase } from "../helpers/database";
import { eventually } from "../helpers/environment";

// A migration that changes a table queues for its strongest lock, and every statement on that table
// queues behind it. Before, a migration waited without bound: a long transaction reading the audit
// log (a report, a verify) while a runtime started on a new version (0033 adds a column to the log)
// stalled every audited write of the app until that transaction ended. Now a migration waits at most
// its lock timeout, gives way, and tries again.
let database: TestDatabase;
let before: string;

beforeAll(async () => {
  database = await createTestDatabase({ empty: true });
  before = await mkdtemp(path.join(tmpdir(), "jetfn-migrations-"));
  for (const file of await readdir(DEFAULT_MIGRATIONS_DIR)) {
    if (file < "0033_") await cp(path.join(DEFAULT_MIGRATIONS_DIR, file), path.join(before, file));
  }
});

afterAll(async () => {
  await database?.drop();
  await rm(before, { recursive: true, force: true });
});

it("gives way to a long transaction instead of stalling the app's writes behind it, then applies", {
  timeout: 180_000,
}, async () => {
  const { sql } = database;
  await migrate(sql, { directory: before });
  await sql`create table public.notes (id serial primary key, body text)`;
  await sql`insert into public.notes (body) values ('before 0033')`;
  await sealAll();

  // A long transaction that has read the audit log.
  const reader = await sql.reserve();
  await reader`begin`;
  await reader`select count(*) from jetfn.audit_log`;
  const waits: number[] = [];
  const migrating = migrate(sql, { onLockWait: (_name, tries) => waits.push(tries) });
  await eventually(async () => waits.length > 0, 60_000);
  // The app writes on while the migration tries again (and the reader is still open).
  const written = sql`insert into public.notes (body) values ('during 0033')`.then(() => "written");
  const outcome = await Promise.race([
    written,
    new Promise((resolve) => setTimeout(() => resolve("still waiting"), 15_000)),
  ]);
  expect(outcome).toBe("written");
  await reader`commit`;
  reader.release();

  const applied = await migrating;
  expect(applied).toContain("0033_jetfn_audit_step.sql");
  expect(applied).toContain("0034_jetfn_sleep.sql");
  // The rows and seals from before it still verify, beside the seals it makes (format 3).
  await sql`insert into public.notes (body) values ('after 0033')`;
  await sealAll();
  const formats = await sql`select distinct format::int from jetfn.audit_seals order by 1`;
  expect(formats.map((row) => row.format)).toEqual([2, 3]);
  expect(await sql`select * from jetfn.verify_audit()`).toEqual([]);
});

/** Seals every settled row (other test files' transactions may hold rows back for a moment). */
async function sealAll(): Promise<void> {
  await eventually(async () => {
    await database.sql`select jetfn.seal_audit(1000)`;
    const [lag] = await database.sql`select unsealed_rows::int as rows from jetfn.audit_seal_lag()`;
    return lag?.rows === 0;
  }, 120_000);
}
