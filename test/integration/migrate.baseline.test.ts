import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { expect, it } from "vitest";
import { DEFAULT_MIGRATIONS_DIR, migrate, migrationStatus } from "../../runtime/db/migrate";
import { BASELINE_MIGRATION, SQUASHED_MIGRATIONS } from "../../runtime/db/migration-baseline";
import { runCli } from "../helpers/cli";
import { createTestDatabase, type TestDatabase } from "../helpers/database";

// jetfn's migrations 0001-0022 were squashed into one baseline before any release. A development
// database migrated before that has the baseline's schema (checked with pg_dump when the baseline
// was written), so its ledger is rewritten instead of the baseline being run; one that applied
// only some of them is refused. The "before" ledger is built on a database the baseline migrated:
// its schema is the one those migrations made.

/** Replaces the baseline's ledger row with rows for `names`, as a database migrated before the squash has. */
async function ledgerBeforeTheSquash(database: TestDatabase, names: readonly string[]): Promise<void> {
  await database.sql.begin(async (tx) => {
    await tx`delete from jetfn.migrations where name = ${BASELINE_MIGRATION}`;
    for (const name of names) {
      await tx`insert into jetfn.migrations (name, checksum) values (${name}, ${`checksum of ${name}`})`;
    }
  });
}

async function ledger(database: TestDatabase): Promise<{ name: string; checksum: string }[]> {
  return (await database.sql`select name, checksum from jetfn.migrations order by name`) as unknown as {
    name: string;
    checksum: string;
  }[];
}

it("records the baseline, without running it, where the ledger holds every squashed migration", async () => {
  const database = await createTestDatabase();
  await database.sql`insert into jetfn.invocations (id, function, status) values ('kept-0001', 'echo', 'succeeded')`;
  await ledgerBeforeTheSquash(database, SQUASHED_MIGRATIONS);
  // Migrations after the baseline (jetfn's 0023 on, the app's) stay as they were.
  const laterRows = (await ledger(database)).filter((row) => !SQUASHED_MIGRATIONS.includes(row.name));
  expect(laterRows.some((row) => row.name.startsWith("app:"))).toBe(true);

  // Running the baseline on this schema would fail at its first `create table`.
  expect(await migrate(database.sql)).toEqual([]);

  const text = await readFile(path.join(DEFAULT_MIGRATIONS_DIR, BASELINE_MIGRATION), "utf8");
  const checksum = createHash("sha256").update(text).digest("hex");
  expect(await ledger(database)).toEqual([{ name: BASELINE_MIGRATION, checksum }, ...laterRows]);
  expect((await migrationStatus(database.sql)).filter((state) => !state.applied || state.modified)).toEqual([]);
  expect(await database.sql`select id from jetfn.invocations`).toEqual([{ id: "kept-0001" }]);
  // And once recorded, migrating again changes nothing.
  expect(await migrate(database.sql)).toEqual([]);
  expect((await ledger(database)).map((row) => row.name)).toEqual([
    BASELINE_MIGRATION,
    ...laterRows.map((row) => row.name),
  ]);
});

it("refuses a ledger holding only some of the squashed migrations, naming them and what to do", async () => {
  const database = await createTestDatabase();
  const applied = SQUASHED_MIGRATIONS.filter((name) => name !== "0022_jetfn_group_check_per_job.sql");
  await ledgerBeforeTheSquash(database, applied);
  const before = await ledger(database);

  await expect(migrate(database.sql)).rejects.toMatchObject({
    code: "E_CONFIG_INVALID",
    message: expect.stringMatching(/lacks 1 of them \(0022_jetfn_group_check_per_job\.sql\).*Drop and recreate/),
  });
  expect(await ledger(database)).toEqual(before);

  const cli = await runCli(["migrate"], { DATABASE_URL: database.url });
  expect(cli.code).not.toBe(0);
  expect(cli.stderr).toContain("E_CONFIG_INVALID");
  expect(cli.stderr).toContain("Drop and recreate the (development) database");
});
