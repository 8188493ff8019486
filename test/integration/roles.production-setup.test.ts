import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import postgres, { type Sql } from "postgres";
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from "vitest";
import { DEFAULT_MIGRATIONS_DIR, migrate } from "../../runtime/db/migrate";
import { createClient } from "../../runtime/sdk/client";
import { runCli, spawnCli } from "../helpers/cli";
import { createTestDatabase, type TestDatabase } from "../helpers/database";
import { urlAs } from "../helpers/database-url";
import { FIXTURE_FUNCTIONS } from "../helpers/environment";
import { startNatsServer, type TestNatsServer } from "../helpers/nats-server";

// The production role setup, step by step as schema/roles.sql documents it, on a database that
// starts empty: a superuser migrates and runs roles.sql; from then on jetfn_owner migrates (jetfn's
// later migrations and the app's), app tables created later by the owner or by a superuser are
// captured at once, and the runtime runs as jetfn_runtime.

const ROLES_SQL = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../schema/roles.sql");

let database: TestDatabase;
let nats: TestNatsServer;
const pools: Sql[] = [];

function connect(role: string): Sql {
  const sql = postgres(urlAs(database.url, role), { max: 2, onnotice: () => {} });
  pools.push(sql);
  return sql;
}

beforeAll(async () => {
  [database, nats] = await Promise.all([createTestDatabase({ empty: true }), startNatsServer()]);
});

afterAll(async () => {
  await Promise.allSettled(pools.map((sql) => sql.end({ timeout: 2 })));
  await Promise.allSettled([database?.drop(), nats?.stop()]);
});

/** How a table stands: its owner, its audit triggers, and what the runtime may do with its rows. */
async function tableState(name: string) {
  const [row] = await database.sql<{ owner: string; triggers: string[]; runtime_may_write: boolean }[]>`
    select c.relowner::regrole::text as owner,
           array(select t.tgname::text from pg_trigger t where t.tgrelid = c.oid order by 1) as triggers,
           has_table_privilege('jetfn_runtime', c.oid, 'select, insert, update, delete') as runtime_may_write
    from pg_class c where c.oid = ${`public.${name}`}::regclass`;
  return row;
}

/** jetfn.audit_row_text as the baseline defines it: redefined, it leaves every hash as it was. */
const REDEFINED_FUNCTION = `create or replace function jetfn.audit_row_text(r jetfn.audit_log) returns text
language sql stable as $$
  select concat_ws('|', r.id, (extract(epoch from r.logged_at) * 1000000)::bigint, r.txid, r.function,
                   r.invocation_id, r.attempt, r.db_user, r.schema_name, r.table_name, r.operation,
                   r.pk::text, r.old_row::text, r.new_row::text, r.changed_columns::text)
$$;`;

const CAPTURED = ["jetfn_audit_delete", "jetfn_audit_insert", "jetfn_audit_truncate", "jetfn_audit_update"];

// Generous: on a loaded machine `jetfn migrate` and `jetfn start` take many seconds.
describe("the production role setup, in order, on Postgres 15+", { timeout: 120_000 }, () => {
  it("1. jetfn migrate, as a superuser, installs jetfn and the app's tables", async () => {
    const migrated = await runCli(["migrate"], { DATABASE_URL: database.url });
    expect(migrated.stderr).toBe("");
    expect(migrated.code).toBe(0);
  });

  it("2. schema/roles.sql runs, also while other databases run it, and runs again", async () => {
    // Roles belong to the whole cluster: other test files create them at the same moment.
    const other = await createTestDatabase(); // dropped when this test ends
    const script = await readFile(ROLES_SQL, "utf8");
    await Promise.all([database.sql.unsafe(script), other.sql.unsafe(script)]);
    await database.sql.unsafe(script);
    const [owner] = await database.sql`select count(*)::int as n from pg_class
      where relnamespace = 'public'::regnamespace and relkind = 'r' and relowner <> 'jetfn_owner'::regrole`;
    expect(owner?.n).toBe(0);
  });

  it("3. jetfn migrate, as jetfn_owner, applies jetfn's later migrations and the app's; new tables are captured at once", async () => {
    // The repository's migrations plus one of each kind written later.
    const directory = await mkdtemp(path.join(tmpdir(), "jetfn-roles-"));
    onTestFinished(() => rm(directory, { recursive: true, force: true }));
    for (const name of await readdir(DEFAULT_MIGRATIONS_DIR)) {
      await copyFile(path.join(DEFAULT_MIGRATIONS_DIR, name), path.join(directory, name));
    }
    // A later jetfn migration: it redefines a function (which takes owning it: roles.sql handed
    // jetfn's functions to jetfn_owner), alters and adds jetfn tables.
    await writeFile(
      path.join(directory, "0999_jetfn_later.sql"),
      `${REDEFINED_FUNCTION}\nalter table jetfn.audit_anchors add column later_note text;\ncreate table jetfn.later_state (id int primary key);\n`,
    );
    // A later app migration, as drizzle-kit writes it: a journal entry and its SQL.
    const appDirectory = path.join(directory, "app");
    await mkdir(path.join(appDirectory, "meta"), { recursive: true });
    await writeFile(
      path.join(appDirectory, "meta", "_journal.json"),
      JSON.stringify({
        version: "7",
        dialect: "postgresql",
        entries: [{ idx: 1, tag: "0001_items", breakpoints: true }],
      }),
    );
    await writeFile(
      path.join(appDirectory, "0001_items.sql"),
      'CREATE TABLE "items" ("id" serial PRIMARY KEY NOT NULL, "name" text NOT NULL, "attempt" integer, "invocation" text);',
    );
    const owner = connect("jetfn_owner");
    expect(await migrate(owner, { directory, appDirectory })).toEqual(["0999_jetfn_later.sql", "app:0001_items.sql"]);
    // Captured by the event trigger itself: nothing else has attached anything yet.
    expect(await tableState("items")).toEqual({ owner: "jetfn_owner", triggers: CAPTURED, runtime_may_write: true });
    // The command itself, as the owner, after the change: nothing left to apply, coverage checked.
    const again = await runCli(["migrate"], { DATABASE_URL: urlAs(database.url, "jetfn_owner") });
    expect(again).toMatchObject({ code: 0, stdout: "nothing to apply\n" });
  });

  it("4. a superuser creating an app table later: it is handed to jetfn_owner and captured at once", async () => {
    await database.sql`create table ledger (id int generated always as identity primary key, amount int not null)`;
    expect(await tableState("ledger")).toEqual({ owner: "jetfn_owner", triggers: CAPTURED, runtime_may_write: true });
    // Given to the runtime by mistake, it comes back: an owner could disable its triggers.
    await database.sql`alter table ledger owner to jetfn_runtime`;
    expect((await tableState("ledger"))?.owner).toBe("jetfn_owner");
  });

  it("5. jetfn_owner creating an app table later: captured at once", async () => {
    await connect("jetfn_owner")`create table notes (id serial primary key, body text)`;
    expect(await tableState("notes")).toEqual({ owner: "jetfn_owner", triggers: CAPTURED, runtime_may_write: true });
  });

  it("6. jetfn start, as jetfn_runtime, writes audited rows", async () => {
    const runtimeUrl = urlAs(database.url, "jetfn_runtime");
    // `jetfn start` in a process of its own, stopped when this test ends.
    const runtime = spawnCli(["start"], {
      NATS_URL: nats.url,
      DATABASE_URL: runtimeUrl,
      JETFN_FUNCTIONS: FIXTURE_FUNCTIONS,
    });
    await runtime.waitFor("Runtime ready", 60_000);
    const client = await createClient({ natsUrl: nats.url });
    onTestFinished(() => client.close());
    const job = await client.enqueue("insert-item", { name: "by-the-runtime-role" });
    await client.result(job.id, { timeout: "60s" });
    const [fromJob] = await database.sql`
      select function, invocation_id, db_user from jetfn.audit_log where table_name = 'items'`;
    expect(fromJob).toEqual({ function: "insert-item", invocation_id: job.id, db_user: "jetfn_runtime" });
    // The runtime role writes the tables created later too, and the writes are audited.
    const runtimeSql = connect("jetfn_runtime");
    await runtimeSql`insert into ledger (amount) values (5)`;
    await runtimeSql`insert into notes (body) values ('hello')`;
    const audited = await database.sql`
      select table_name, db_user from jetfn.audit_log where table_name in ('ledger', 'notes') order by id`;
    expect(audited).toEqual([
      { table_name: "ledger", db_user: "jetfn_runtime" },
      { table_name: "notes", db_user: "jetfn_runtime" },
    ]);
    // Rows the runtime role wrote outside any invocation (its credentials used elsewhere) are flagged.
    const check = await runCli(["audit", "--check"], { DATABASE_URL: runtimeUrl });
    expect(check.code).toBe(1);
    expect(check.stdout).toContain(
      "2 change(s) by jetfn_runtime outside any invocation, in public.ledger, public.notes",
    );
  });

  it("7. the runtime role records durable steps' memos and reads them", async () => {
    const runtimeSql = connect("jetfn_runtime");
    await runtimeSql`select jetfn.record_step('roles-steps-1', 'orders.fulfil', 1, '{}'::jsonb, now(), now(), 1, null,
      null, null, null, 'reserve', '{"left": 2}'::jsonb, now())`;
    expect(await runtimeSql`select key, result from jetfn.steps where invocation_id = 'roles-steps-1'`).toEqual([
      { key: "reserve", result: { left: 2 } },
    ]);
  });
});
