import { copyFile, mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DEFAULT_MIGRATIONS_DIR, migrate } from "../../runtime/db/migrate";
import { runCli } from "../helpers/cli";
import { createTestDatabase, type TestDatabase } from "../helpers/database";
import { adminUrl, databaseUrl } from "../helpers/database-url";

let database: TestDatabase;

beforeAll(async () => {
  database = await createTestDatabase();
});

afterAll(async () => {
  await database?.drop();
});

interface Change {
  operation: string;
  pk: unknown;
  old_row: unknown;
  new_row: unknown;
  changed_columns: string[] | null;
}

async function changesOf(table: string): Promise<Change[]> {
  return (await database.sql`
    select operation, pk, old_row, new_row, changed_columns from jetfn.audit_log
    where table_name = ${table} order by id`) as unknown as Change[];
}

/** Runs `body` with the DDL event trigger off, as on a database migrated without a superuser. */
async function withoutEventTrigger(body: () => Promise<void>): Promise<void> {
  await database.sql`alter event trigger jetfn_audit_new_tables disable`;
  try {
    await body();
  } finally {
    await database.sql`alter event trigger jetfn_audit_new_tables enable`;
  }
}

describe("generated capture functions", () => {
  it("capture tables whose columns share names with the functions' own variables", async () => {
    await database.sql`create table clashing (id int primary key, xact int, stamp_function text, changed_row int)`;
    await database.sql.begin(async (tx) => {
      await tx`select set_config('jetfn.function', 'clash', true), set_config('jetfn.attempt', '3', true)`;
      await tx`insert into clashing values (1, 10, 'mine', 20)`;
      await tx`update clashing set xact = 11`;
      await tx`delete from clashing`;
    });
    const rows = await database.sql`
      select function, attempt, operation, txid = pg_current_xact_id()::text::bigint as this_transaction
      from jetfn.audit_log where table_name = 'clashing' order by id`;
    expect(rows).toEqual([
      { function: "clash", attempt: 3, operation: "INSERT", this_transaction: false },
      { function: "clash", attempt: 3, operation: "UPDATE", this_transaction: false },
      { function: "clash", attempt: 3, operation: "DELETE", this_transaction: false },
    ]);
    expect((await changesOf("clashing")).map((change) => [change.old_row, change.new_row])).toEqual([
      [null, { id: 1, xact: 10, stamp_function: "mine", changed_row: 20 }],
      [{ xact: 10 }, { xact: 11 }],
      [{ id: 1, xact: 11, stamp_function: "mine", changed_row: 20 }, null],
    ]);
  });

  it("never pairs an update's values with the wrong column names after columns move", async () => {
    await database.sql`create table moved (id int primary key, a text, b text)`;
    await database.sql`insert into moved values (1, 'a1', 'b1')`;
    await withoutEventTrigger(async () => {
      // Same names, new order (id, b, a): a stale function zipping by position would swap a and b.
      await database.sql`alter table moved drop column a`;
      await database.sql`alter table moved add column a text`;
      await database.sql`update moved set a = 'a2', b = 'b2'`;
      const [refreshed] = await database.sql`select jetfn.attach_audit_everywhere() as n`;
      expect(refreshed?.n).toBe(1);
      const [again] = await database.sql`select jetfn.attach_audit_everywhere() as n`;
      expect(again?.n).toBe(0);
      await database.sql`update moved set a = 'a3', b = 'b3'`;
    });
    const updates = (await changesOf("moved")).filter((change) => change.operation === "UPDATE");
    expect(updates.map((change) => [change.old_row, change.new_row, change.changed_columns])).toEqual([
      [{ a: null, b: "b1" }, { a: "a2", b: "b2" }, ["a", "b"]],
      [{ a: "a2", b: "b2" }, { a: "a3", b: "b3" }, ["a", "b"]],
    ]);
  });

  it("regenerates at once through the event trigger when a key column is renamed", async () => {
    await database.sql`create table renamed (id int primary key, v text)`;
    await database.sql`alter table renamed rename column id to code`;
    await database.sql`insert into renamed values (7, 'x')`;
    await database.sql`delete from renamed`;
    expect((await changesOf("renamed")).map((change) => [change.operation, change.pk])).toEqual([
      ["INSERT", { code: 7 }],
      ["DELETE", { code: 7 }],
    ]);
  });

  it("fails loudly while stale after a key column is renamed, until `jetfn migrate` regenerates", async () => {
    await database.sql`create table rekeyed (id int primary key, v text)`;
    await withoutEventTrigger(async () => {
      await database.sql`alter table rekeyed rename column id to code`;
      // The stale INSERT capture builds the key from a column that is gone: the write fails rather
      // than be recorded without its key.
      await expect(database.sql`insert into rekeyed values (1, 'x')`).rejects.toThrow(/does not exist/);
      const cli = await runCli(["migrate"], { DATABASE_URL: database.url });
      expect(cli.code).toBe(0);
      await database.sql`insert into rekeyed values (1, 'x')`;
    });
    expect((await changesOf("rekeyed")).map((change) => [change.operation, change.pk, change.new_row])).toEqual([
      ["INSERT", { code: 1 }, { code: 1, v: "x" }],
    ]);
  });
});

describe("migrating the log to json", () => {
  it("keeps rows sealed as jsonb verifying, seals new json rows, and still finds an edit", {
    timeout: 300_000,
  }, async () => {
    const name = `jetfn_test_json_${process.pid}_${Date.now()}`;
    const admin = postgres(adminUrl(), { max: 1, onnotice: () => {} });
    const before = await mkdtemp(path.join(tmpdir(), "jetfn-migrations-"));
    await admin.unsafe(`create database ${name}`);
    const sql = postgres(databaseUrl(name), { max: 2, onnotice: () => {} });
    try {
      for (const file of await readdir(DEFAULT_MIGRATIONS_DIR)) {
        if (file < "0008") await copyFile(path.join(DEFAULT_MIGRATIONS_DIR, file), path.join(before, file));
      }
      await migrate(sql, { directory: before });
      await sql`create table pairs (a int, b text, note text, primary key (a, b))`;
      await sql`insert into pairs values (1, 'x', 'spaced {"json": [1, 2]}'), (2, 'y', null)`;
      await sql`update pairs set note = 'changed' where a = 2`;
      await sealAll(sql);
      await migrate(sql);
      expect(await sql`select * from jetfn.verify_audit()`).toEqual([]);
      await sql`insert into pairs values (3, 'z', 'after')`;
      await sql`delete from pairs where a = 1`;
      await sealAll(sql);
      expect(await sql`select * from jetfn.verify_audit()`).toEqual([]);
      const [key] = await sql`select pk from jetfn.audit_log where operation = 'DELETE'`;
      expect(key?.pk).toEqual({ a: 1, b: "x" });
      await sql`update jetfn.audit_log set new_row = '{"a": 3, "b": "z", "note": "forged"}' where new_row->>'note' = 'after'`;
      const [broken] = await sql`select problem from jetfn.verify_audit()`;
      expect(broken?.problem).toBe("audit rows were altered");
    } finally {
      await sql.end();
      await admin.unsafe(`drop database if exists ${name} with (force)`);
      await admin.end();
      await rm(before, { recursive: true, force: true });
    }
  });
});

async function sealAll(sql: postgres.Sql): Promise<void> {
  // A seal covers only transactions older than the oldest running on the server: other test files
  // may hold it back a while.
  const deadline = Date.now() + 240_000;
  for (;;) {
    await sql`select jetfn.seal_audit(100000)`;
    const [lag] = await sql`select unsealed_rows::int as n from jetfn.audit_seal_lag()`;
    if (lag?.n === 0) return;
    if (Date.now() > deadline) throw new Error("the audit log could not be sealed within 240s");
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}
