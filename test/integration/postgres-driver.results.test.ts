import { inspect } from "node:util";
import repositoryPostgres, { type Sql } from "postgres";
import { afterAll, beforeAll, expect, it } from "vitest";
import { createTestDatabase, type TestDatabase } from "../helpers/database";

// patches/postgres+3.4.9.patch makes a result's statement details (count, command, columns, state,
// statement) accessors over private fields instead of own hidden properties, for speed. What a
// result shows and answers must not change: only its rows are enumerable, and the details read and
// write as before. JETFN_TEST_DRIVER names another copy of the driver to check (see the
// killed-connection test).

const postgres: typeof repositoryPostgres = process.env.JETFN_TEST_DRIVER
  ? ((await import(process.env.JETFN_TEST_DRIVER)) as { default: typeof repositoryPostgres }).default
  : repositoryPostgres;

let database: TestDatabase;
let sql: Sql;

beforeAll(async () => {
  database = await createTestDatabase();
  sql = postgres(database.url, { max: 1, onnotice: () => {} });
  await sql`create table driver_results (id int primary key, note text not null)`;
});

afterAll(async () => {
  await sql?.end({ timeout: 1 });
  await database?.drop();
});

it("keeps a result's details readable and hidden, without an own property per detail", async () => {
  const inserted = await sql`insert into driver_results values (1, 'a'), (2, 'b')`;
  expect(inserted.count).toBe(2);
  expect(inserted.command).toBe("INSERT");

  const rows = await sql`select id, note from driver_results order by id`;
  expect(rows.count).toBe(2);
  expect(rows.command).toBe("SELECT");
  expect(rows.columns.map((column) => column.name)).toEqual(["id", "note"]);
  expect(rows.statement.string).toContain("select id, note");
  // Only the rows show, however the result is looked at.
  expect(rows).toEqual([
    { id: 1, note: "a" },
    { id: 2, note: "b" },
  ]);
  expect(Object.keys(rows)).toEqual(["0", "1"]);
  expect(JSON.stringify(rows)).toBe('[{"id":1,"note":"a"},{"id":2,"note":"b"}]');
  expect(inspect(rows)).not.toContain("count");
  expect([...rows]).toHaveLength(2);
  // Array methods make plain arrays, as before.
  expect(rows.map((row) => row.id).constructor).toBe(Array);
  // Still writable (the driver sets them as replies arrive; callers may too).
  rows.count = 7;
  expect(rows.count).toBe(7);
  // Read through another object, a detail is undefined (no own property to find), never a throw.
  expect(new Proxy(rows, {}).count).toBeUndefined();
  expect(Object.create(rows).command).toBeUndefined();
  // The patched shape: no own property per detail (the unpatched driver defines five per result).
  expect(Object.getOwnPropertyNames(rows).filter((name) => !/^\d+$/.test(name) && name !== "length")).toEqual([]);
});

it("keeps each statement's details in a multi-statement simple query", async () => {
  const results = (await sql.unsafe("select 1 as one; select id from driver_results; select 2 as two")) as unknown as {
    count: number | null;
    command: string;
  }[];
  expect(results.map((result) => [result.command, result.count])).toEqual([
    ["SELECT", 1],
    ["SELECT", 2],
    ["SELECT", 1],
  ]);
  expect(results[0]).toEqual([{ one: 1 }]);
});
