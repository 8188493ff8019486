import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Runtime } from "../../runtime/runtime";
import type { JetfnClient } from "../../runtime/sdk/client";
import { createTestEnvironment, eventually, type TestEnvironment } from "../helpers/environment";

let env: TestEnvironment;
let client: JetfnClient;
let runtime: Runtime;

interface AuditRow {
  function: string | null;
  invocation_id: string | null;
  attempt: number | null;
  table_name: string;
  operation: string;
  pk: Record<string, unknown> | null;
  old_row: Record<string, unknown> | null;
  new_row: Record<string, unknown> | null;
  changed_columns: string[] | null;
}

async function auditOf(where: string, value: unknown): Promise<AuditRow[]> {
  return (await env.database.sql.unsafe(
    `select function, invocation_id, attempt, table_name, operation, pk, old_row, new_row, changed_columns
     from jetfn.audit_log where ${where} order by id`,
    [value as never],
  )) as unknown as AuditRow[];
}

/**
 * Seals until nothing is left. A seal only covers transactions older than the oldest one still
 * running anywhere on the server, so with other test files busy this can take a few rounds.
 */
async function sealEverything(): Promise<void> {
  await eventually(async () => {
    await env.database.sql`select jetfn.seal_audit(100000)`;
    const [lag] = await env.database.sql`select unsealed_rows::int as n from jetfn.audit_seal_lag()`;
    return lag?.n === 0;
  }, 20_000);
}

beforeAll(async () => {
  env = await createTestEnvironment();
  await env.database.sql.unsafe(`
    create table ledger (id serial primary key, tag text unique not null, qty int not null);
    create table owners (id serial primary key, name text not null);
    create table pets (id serial primary key, owner int not null references owners(id) on delete cascade, name text);
  `);
  runtime = await env.startRuntime();
  client = await env.client();
});

afterAll(async () => {
  await env?.close();
});

describe("audit capture", () => {
  it("stamps every kind of change with the function, invocation and attempt", async () => {
    const job = await client.enqueue("audit-writer", { tag: "t1" });
    await client.result(job.id);
    const rows = await auditOf("invocation_id = $1", job.id);
    expect(rows.every((row) => row.function === "audit-writer" && row.attempt === 1)).toBe(true);
    const summary = rows.map((row) => `${row.operation} ${row.table_name} ${JSON.stringify(row.pk)}`);
    expect(summary).toEqual([
      'INSERT ledger {"id":1}',
      'UPDATE ledger {"id":1}',
      'INSERT ledger {"id":2}',
      'INSERT ledger {"id":3}',
      'INSERT ledger {"id":4}',
      'DELETE ledger {"id":2}',
      'INSERT owners {"id":1}',
      'INSERT pets {"id":1}',
      'DELETE owners {"id":1}',
      'DELETE pets {"id":1}', // the cascade of the owners delete
    ]);
    const update = rows[1] as AuditRow;
    expect(update).toMatchObject({ old_row: { qty: 1 }, new_row: { qty: 5 }, changed_columns: ["qty"] });
    expect(rows[0]?.new_row).toEqual({ id: 1, tag: "t1", qty: 1 });
    expect(rows[5]?.old_row).toEqual({ id: 2, tag: "t1-bulk-1", qty: 1 });
  });

  it("keeps nothing of a rolled-back attempt; the retry's rows carry its attempt number", async () => {
    const job = await client.enqueue("audit-writer", { tag: "t2", failFirstAttempt: true });
    await client.result(job.id);
    const rows = await auditOf("invocation_id = $1", job.id);
    expect(rows.length).toBe(10);
    expect(new Set(rows.map((row) => row.attempt))).toEqual(new Set([2]));
  });

  it("records writes made outside any function, with no function name", async () => {
    await env.database.sql`insert into ledger (tag, qty) values ('by-hand', 7)`;
    await env.database.sql`update ledger set qty = qty + 1 where tag = 'by-hand'`;
    const rows = await auditOf(
      "new_row->>'tag' = $1 or (table_name = 'ledger' and changed_columns is not null and function is null)",
      "by-hand",
    );
    expect(rows.map((row) => [row.operation, row.function, row.invocation_id])).toEqual([
      ["INSERT", null, null],
      ["UPDATE", null, null],
    ]);
  });

  it("captures bulk statements set-wise: one audit row per changed row", async () => {
    await env.database.sql`insert into ledger (tag, qty) select 'bulk-' || g, g from generate_series(1, 1000) g`;
    await env.database.sql`update ledger set qty = qty * 2 where tag like 'bulk-%'`;
    await env.database.sql`delete from ledger where tag like 'bulk-%' and qty > 1000`;
    const [counts] = await env.database.sql`
      select count(*) filter (where operation = 'INSERT')::int as inserts,
             count(*) filter (where operation = 'UPDATE')::int as updates,
             count(*) filter (where operation = 'DELETE')::int as deletes
      from jetfn.audit_log where coalesce(new_row->>'tag', old_row->>'tag', '') like 'bulk-%' or
        (operation = 'UPDATE' and pk::jsonb in (select jsonb_build_object('id', id) from ledger where tag like 'bulk-%'))`;
    expect(counts).toEqual({ inserts: 1000, updates: 500, deletes: 500 });
  });

  it("records a TRUNCATE as one row", async () => {
    await env.database.sql`create table scratch (id int primary key)`;
    await env.database.sql`insert into scratch values (1), (2)`;
    await env.database.sql`truncate scratch`;
    const rows = await auditOf("table_name = $1", "scratch");
    expect(rows.map((row) => row.operation)).toEqual(["INSERT", "INSERT", "TRUNCATE"]);
  });

  it("audits a table created while the runtime runs", async () => {
    await env.database.sql`create table late_comer (code text primary key, note text)`;
    await env.database.sql`insert into late_comer values ('a', 'hello')`;
    expect(await auditOf("table_name = $1", "late_comer")).toEqual([
      expect.objectContaining({ operation: "INSERT", pk: { code: "a" }, new_row: { code: "a", note: "hello" } }),
    ]);
  });

  it("attaches missing triggers at deploy where no event trigger exists", async () => {
    await env.database.sql`alter event trigger jetfn_audit_new_tables disable`;
    try {
      await env.database.sql`create table unnoticed (id int primary key)`;
      const [before] = await env.database.sql`select count(*)::int as n from jetfn.unaudited_tables()`;
      expect(before?.n).toBe(1);
      // The runtime covers tables at start and on every deploy; a restart is a deploy of everything.
      await runtime.stop();
      runtime = await env.startRuntime({}, { laterTestsUseIt: true });
      const [after] = await env.database.sql`select count(*)::int as n from jetfn.unaudited_tables()`;
      expect(after?.n).toBe(0);
      await env.database.sql`insert into unnoticed values (1)`;
      expect(await auditOf("table_name = $1", "unnoticed")).toHaveLength(1);
    } finally {
      await env.database.sql`alter event trigger jetfn_audit_new_tables enable`;
    }
  });

  it("captures a column added later in UPDATEs, with or without the event trigger", async () => {
    await env.database.sql`create table reshaped (id int primary key, a text)`;
    await env.database.sql`insert into reshaped values (1, 'x')`;
    // The event trigger regenerates the table's UPDATE capture at ALTER TABLE time.
    await env.database.sql`alter table reshaped add column b int`;
    await env.database.sql`update reshaped set b = 2`;
    // Without it, the stale capture notices the new shape and diffs generically until refreshed.
    await env.database.sql`alter event trigger jetfn_audit_new_tables disable`;
    try {
      await env.database.sql`alter table reshaped add column c numeric`;
      await env.database.sql`alter table reshaped drop column a`;
      await env.database.sql`update reshaped set c = 1.0, b = 3`;
      // Numeric scale is part of the stored value: 1.0 -> 1.00 is a change.
      await env.database.sql`update reshaped set c = 1.00`;
      const [refreshed] = await env.database.sql`select jetfn.attach_audit_everywhere() as n`;
      expect(refreshed?.n).toBe(1);
      await env.database.sql`update reshaped set c = 1.00, b = 4`;
    } finally {
      await env.database.sql`alter event trigger jetfn_audit_new_tables enable`;
    }
    const rows = await auditOf("table_name = $1 and operation = 'UPDATE'", "reshaped");
    expect(rows.map((row) => [row.pk, row.old_row, row.new_row, row.changed_columns])).toEqual([
      [{ id: 1 }, { b: null }, { b: 2 }, ["b"]],
      [{ id: 1 }, { b: 2, c: null }, { b: 3, c: 1.0 }, ["b", "c"]],
      [{ id: 1 }, { c: 1.0 }, { c: 1.0 }, ["c"]],
      [{ id: 1 }, { b: 3 }, { b: 4 }, ["b"]],
    ]);
  });

  it("does not audit jetfn's own tables into themselves", async () => {
    const [row] = await env.database.sql`select count(*)::int as n from jetfn.audit_log where schema_name = 'jetfn'`;
    expect(row?.n).toBe(0);
  });

  it("never seals past a transaction still open, even when its rows have lower ids", async () => {
    const reserved = await env.database.sql.reserve();
    try {
      await reserved`begin`;
      await reserved`insert into ledger (tag, qty) values ('slow-writer', 1)`;
      // A later transaction commits while the first is still open.
      await env.database.sql`insert into ledger (tag, qty) values ('fast-writer', 1)`;
      await env.database.sql`select jetfn.seal_audit(100000)`;
      await reserved`commit`;
    } finally {
      reserved.release();
    }
    await sealEverything();
    expect(await env.database.sql`select * from jetfn.verify_audit()`).toEqual([]);
  });

  it("seals committed rows into a hash chain that verify checks, and finds an edited or deleted row", async () => {
    await sealEverything();
    const intact = await env.database.sql`select * from jetfn.verify_audit()`;
    expect(intact).toEqual([]);

    // Someone with more rights than the runtime edits a sealed row...
    await env.database
      .sql`update jetfn.audit_log set new_row = '{"qty": 999}' where id = (select min(id) from jetfn.audit_log)`;
    const [edited] = await env.database.sql`select seq::int, problem from jetfn.verify_audit()`;
    expect(edited).toEqual({ seq: 1, problem: "audit rows were altered" });
  });
});
