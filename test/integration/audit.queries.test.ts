import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { invocationChanges, listAuditEntries, rowHistory } from "../../runtime/audit/audit-queries";
import { connectDatabase, type DatabaseClient } from "../../runtime/db/client";
import { createTestDatabase, type TestDatabase } from "../helpers/database";

let database: TestDatabase;
let client: DatabaseClient;

beforeAll(async () => {
  database = await createTestDatabase();
  client = connectDatabase({ url: database.url, poolSize: 2 });
  await database.sql`create table items (id int primary key, v text)`;
});

afterAll(async () => {
  await client?.close();
  await database?.drop();
});

/** One write stamped as the function `writer`, invocation `inv-1`. */
async function stampedWrite(statement: string): Promise<void> {
  await database.sql.begin(async (tx) => {
    await tx`select set_config('jetfn.function', 'writer', true), set_config('jetfn.invocation_id', 'inv-1', true)`;
    await tx.unsafe(statement);
  });
}

/**
 * Seals until nothing is left. A seal only covers transactions older than the oldest one still
 * running anywhere on the server, so with other test files busy this can take a few rounds.
 */
async function sealEverything(): Promise<void> {
  const deadline = Date.now() + 240_000;
  for (;;) {
    await database.sql`select jetfn.seal_audit(100000)`;
    const [lag] = await database.sql`select unsealed_rows::int as n from jetfn.audit_seal_lag()`;
    if (lag?.n === 0) return;
    if (Date.now() > deadline) throw new Error("the audit log could not be sealed within 240s");
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

async function counts(): Promise<{ lookup: number; unsealed: number }> {
  const [row] = await database.sql`
    select (select count(*)::int from jetfn.audit_lookup) as lookup,
           (select unsealed_rows::int from jetfn.audit_seal_lag()) as unsealed`;
  return row as { lookup: number; unsealed: number };
}

async function answers(): Promise<unknown> {
  const history = await rowHistory(client.db, "items", 1);
  const byFunction = await listAuditEntries(client.db, { function: "writer" });
  const newestTwo = await listAuditEntries(client.db, { function: "writer", limit: 2 });
  const changes = await invocationChanges(client.db, "inv-1");
  return {
    history: history.map((entry) => [entry.operation, entry.newRow]),
    byFunction: byFunction.map((entry) => entry.id),
    newestTwo: newestTwo.map((entry) => entry.id),
    changes: changes.get("public.items")?.map((entry) => entry.id),
  };
}

describe("audit queries over sealed and unsealed rows", { timeout: 300_000 }, () => {
  it("find rows through the sealer's lookup and in the unsealed tail alike", async () => {
    await stampedWrite("insert into items values (1, 'a')");
    await stampedWrite("update items set v = 'b' where id = 1");
    await sealEverything();
    await stampedWrite("update items set v = 'c' where id = 1");
    // Two rows sealed (and in the lookup), one in the tail.
    expect(await counts()).toEqual({ lookup: 2, unsealed: 1 });

    const ids = (await listAuditEntries(client.db, { table: "items" })).map((entry) => entry.id);
    expect(ids).toHaveLength(3);
    const expected = {
      history: [
        ["INSERT", { id: 1, v: "a" }],
        ["UPDATE", { v: "b" }],
        ["UPDATE", { v: "c" }],
      ],
      byFunction: ids,
      newestTwo: ids.slice(0, 2),
      changes: [...ids].reverse(),
    };
    expect(await answers()).toEqual(expected);

    // Once everything is sealed, the lookup alone answers, with the same result.
    await sealEverything();
    expect(await counts()).toEqual({ lookup: 3, unsealed: 0 });
    expect(await answers()).toEqual(expected);
  });

  it("find sealed rows through the BRIN index whether their block range is summarized or not", async () => {
    await database.sql`create table many (id int primary key, v text)`;
    // Far more than one block range (128 pages) of audit rows.
    await stampedWrite("insert into many select g, repeat('x', 100) from generate_series(1, 30000) g");
    await database.sql`
      select brin_summarize_new_values(i.inhrelid::regclass)
      from pg_inherits i where i.inhparent = 'jetfn.audit_log_brin'::regclass`;
    // These land in the range being filled, which stays unsummarized.
    await stampedWrite("update many set v = 'late' where id in (1, 29999)");
    await sealEverything();
    for (const id of [1, 15000, 29999]) {
      const history = await rowHistory(client.db, "many", id);
      expect(history.map((entry) => entry.operation)).toEqual(id === 15000 ? ["INSERT"] : ["INSERT", "UPDATE"]);
    }
    const newest = await listAuditEntries(client.db, { function: "writer", table: "many", limit: 3 });
    expect(newest.map((entry) => [entry.operation, entry.pk])).toEqual([
      ["UPDATE", { id: 29999 }],
      ["UPDATE", { id: 1 }],
      ["INSERT", { id: 30000 }],
    ]);
  });

  it("keeps the log's BRIN summaries and statistics current for the reads, and jetfn.audit_tail holds the unsealed rows", async () => {
    await database.sql`create table wide (id int primary key, v text)`;
    await stampedWrite("insert into wide select g, repeat('y', 100) from generate_series(1, 30000) g");
    await sealEverything();
    // The sealer calls this after each round that sealed rows: full ranges get summarized once.
    const [first] = await database.sql`select jetfn.summarize_audit_ranges() as ranges`;
    expect(first?.ranges).toBeGreaterThan(0);
    const [again] = await database.sql`select jetfn.summarize_audit_ranges() as ranges`;
    expect(again?.ranges).toBe(0);
    const [stats] = await database.sql`
      select count(*)::int as columns from pg_stats s
      join pg_partition_tree('jetfn.audit_log') p on p.relid = format('%I.%I', s.schemaname, s.tablename)::regclass
      where p.isleaf`;
    expect(stats?.columns).toBeGreaterThan(0);

    await stampedWrite("update wide set v = 'z' where id <= 3");
    const tail = await database.sql`select operation, pk::text as pk from jetfn.audit_tail order by id`;
    expect(tail).toEqual([
      { operation: "UPDATE", pk: '{"id":1}' },
      { operation: "UPDATE", pk: '{"id":2}' },
      { operation: "UPDATE", pk: '{"id":3}' },
    ]);
    const history = await rowHistory(client.db, "wide", 2);
    expect(history.map((entry) => [entry.operation, entry.newRow])).toEqual([
      ["INSERT", { id: 2, v: "y".repeat(100) }],
      ["UPDATE", { v: "z" }],
    ]);
  });
});
