import { readFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import postgres, { type Sql } from "postgres";
import { describe, expect, it, onTestFinished } from "vitest";
import { createTestDatabase, type TestDatabase } from "../helpers/database";
import { urlAs } from "../helpers/database-url";

// jetfn_owner runs migrations and owns the app's tables, but is no superuser. The event trigger
// that captures new tables runs its function as whoever issues DDL, superusers included, in any
// schema: if jetfn_owner could change the code it runs, a superuser's next CREATE TABLE anywhere
// in the database would run jetfn_owner's code with superuser rights.

const ROLES_SQL = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../schema/roles.sql");

interface Setup {
  database: TestDatabase;
  /** Runs a statement as jetfn_owner; returns the refusal's message, or undefined if it ran. */
  asOwner(statement: string): Promise<string | undefined>;
  /** A superuser's everyday DDL in a schema jetfn does not audit; and who ran the attacker's code. */
  superuserDdl(): Promise<{ refusal?: string; ranAs: string[] }>;
}

/** A database of this test's own with the production roles, stopped when the test ends. */
async function setUp(): Promise<Setup> {
  const database = await createTestDatabase();
  let owner: Sql | undefined;
  onTestFinished(async () => {
    await owner?.end({ timeout: 2 });
    await database.drop();
  });
  await database.sql.unsafe(await readFile(ROLES_SQL, "utf8"));
  // A schema jetfn does not audit, and what the attacker's code records there when it runs.
  await database.sql`create schema elsewhere`;
  await database.sql`create table elsewhere.who_ran (role text not null)`;
  await database.sql`grant usage on schema elsewhere to public`;
  await database.sql`grant insert on elsewhere.who_ran to public`;
  owner = postgres(urlAs(database.url, "jetfn_owner"), { max: 1, onnotice: () => {} });
  const ownerSql = owner;
  return {
    database,
    async asOwner(statement) {
      try {
        await ownerSql.unsafe(statement);
        return undefined;
      } catch (error) {
        return (error as Error).message;
      }
    },
    async superuserDdl() {
      let refusal: string | undefined;
      try {
        await database.sql`create table elsewhere.unrelated (id int)`;
      } catch (error) {
        refusal = (error as Error).message;
      }
      const rows = await database.sql<{ role: string }[]>`select role from elsewhere.who_ran`;
      return { refusal, ranAs: rows.map((row) => row.role) };
    },
  };
}

describe("jetfn_owner cannot get a superuser to run its code through the DDL event trigger", () => {
  it("refuses jetfn_owner rewriting the event trigger's function", async () => {
    const { database, asOwner, superuserDdl } = await setUp();
    const [hook] = await database.sql<{ name: string }[]>`
      select evtfoid::regproc::text as name from pg_event_trigger where evtname = 'jetfn_audit_new_tables'`;
    expect(hook?.name).toMatch(/^jetfn\./);
    const rewrite = await asOwner(`
      create or replace function ${hook?.name}() returns event_trigger language plpgsql as $$
      begin insert into elsewhere.who_ran values (current_user); end $$`);
    expect(await superuserDdl()).toEqual({ refusal: undefined, ranAs: [] });
    expect(rewrite).toMatch(/must be owner/);
  });

  it("refuses to read jetfn.audited_schemas once jetfn_owner made it a view over its own function", async () => {
    const { asOwner, superuserDdl } = await setUp();
    const swap = await asOwner(`
      create function jetfn.schemas_and_more() returns setof text language plpgsql as $$
      begin insert into elsewhere.who_ran values (current_user); return next 'public'; end $$;
      drop table jetfn.audited_schemas;
      create view jetfn.audited_schemas as select s as schema_name from jetfn.schemas_and_more() s`);
    expect(swap).toBeUndefined(); // jetfn_owner owns the table; what matters is what runs next
    const outcome = await superuserDdl();
    expect(outcome.ranAs).toEqual([]);
    expect(outcome.refusal).toMatch(/jetfn.audited_schemas is no longer a plain table/);
  });
});
