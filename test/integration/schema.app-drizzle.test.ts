import { execFile } from "node:child_process";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { type DrizzleSnapshotJSON, generateDrizzleJson, generateMigration } from "drizzle-kit/api";
import { describe, expect, it, onTestFinished } from "vitest";
import * as appSchema from "../../schema/app";
import { createTestDatabase } from "../helpers/database";

// The example app declares its tables once, in schema/app.ts; drizzle-kit generates drizzle/ from it
// and `jetfn migrate` applies that. These fail when the two drift apart: a table, column or index
// changed without `npx drizzle-kit generate`, or a generated migration edited by hand.

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const DRIZZLE_DIR = path.join(ROOT, "drizzle");
const DRIZZLE_KIT = path.join(ROOT, "node_modules", "drizzle-kit", "bin.cjs");
const FIX = "schema/app.ts and the migrated database differ: run `npx drizzle-kit generate` and commit drizzle/";
const run = promisify(execFile);

/** Btree operator classes Postgres picks by itself; introspection names them, a schema does not. */
const DEFAULT_OPERATOR_CLASSES = new Set([
  "int2_ops",
  "int4_ops",
  "int8_ops",
  "text_ops",
  "bool_ops",
  "timestamptz_ops",
]);

/** The part of a snapshot's tables this reads. */
type PulledTables = Record<string, { indexes: Record<string, { columns: { opclass?: string }[] }> }>;

/** The database's `public` schema as drizzle-kit reads it (`drizzle-kit pull`). */
async function introspect(url: string): Promise<DrizzleSnapshotJSON> {
  const out = await mkdtemp(path.join(tmpdir(), "jetfn-drizzle-pull-"));
  onTestFinished(() => rm(out, { recursive: true, force: true }));
  await run(
    process.execPath,
    [DRIZZLE_KIT, "pull", "--dialect=postgresql", `--url=${url}`, `--out=${out}`, "--schemaFilters=public"],
    { cwd: ROOT, timeout: 60_000 },
  );
  const snapshot = JSON.parse(
    await readFile(path.join(out, "meta", "0000_snapshot.json"), "utf8"),
  ) as DrizzleSnapshotJSON;
  for (const table of Object.values(snapshot.tables as PulledTables)) {
    for (const index of Object.values(table.indexes)) {
      for (const column of index.columns) {
        if (column.opclass && DEFAULT_OPERATOR_CLASSES.has(column.opclass)) delete column.opclass;
      }
    }
  }
  return snapshot;
}

/** What drizzle-kit would run to make the database at `url` what schema/app.ts declares (nothing when they agree). */
async function differences(url: string): Promise<string[]> {
  const database = await introspect(url);
  return generateMigration(database, generateDrizzleJson(appSchema, database.id));
}

describe("the app's drizzle schema and its migrations", () => {
  it("the database jetfn migrate made is exactly what schema/app.ts declares", async () => {
    const database = await createTestDatabase();
    expect(await differences(database.url), FIX).toEqual([]);
  }, 60_000);

  it("drizzle/ holds a migration for every change of schema/app.ts (its last snapshot is the schema)", async () => {
    const snapshots = (await readdir(path.join(DRIZZLE_DIR, "meta"))).filter((name) => name.endsWith("_snapshot.json"));
    const last = snapshots.sort().at(-1) as string;
    const snapshot = JSON.parse(await readFile(path.join(DRIZZLE_DIR, "meta", last), "utf8")) as DrizzleSnapshotJSON;
    expect(await generateMigration(snapshot, generateDrizzleJson(appSchema, snapshot.id)), FIX).toEqual([]);
  });

  it("notices a database that differs from the schema (an index dropped, a column added)", async () => {
    const database = await createTestDatabase();
    await database.sql`drop index comments_post_idx`;
    await database.sql`alter table posts add column draft boolean`;
    const found = (await differences(database.url)).join("\n");
    expect(found).toMatch(/CREATE INDEX "comments_post_idx"/);
    expect(found).toMatch(/DROP COLUMN "draft"/);
  }, 60_000);
});
