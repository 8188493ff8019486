import { readFile } from "node:fs/promises";
import { afterAll, beforeAll, expect, it } from "vitest";
import { CURRENT_SCHEMA_FILE, dumpSchema } from "../../scripts/current-schema";
import { createTestDatabase, type TestDatabase } from "../helpers/database";

// schema/current.sql is what reviewers read instead of the migrations: it must be exactly what the
// migrations make. When a migration changes, `npm run schema:current` rewrites it.
let database: TestDatabase;

beforeAll(async () => {
  database = await createTestDatabase();
});

afterAll(async () => {
  await database?.drop();
});

it("schema/current.sql is the schema every migration makes (npm run schema:current rewrites it)", async () => {
  const current = await readFile(CURRENT_SCHEMA_FILE, "utf8");
  expect(await dumpSchema(database.url), "schema/current.sql differs: run npm run schema:current").toBe(current);
});
