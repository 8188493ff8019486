import postgres, { type Sql } from "postgres";
import { inject } from "vitest";
import { adminUrl, databaseUrl } from "./database-url";
import { stopWhenTestEnds } from "./test-scope";

/** A database of its own for one test file, cloned from the run's migrated template. */
export interface TestDatabase {
  readonly name: string;
  readonly url: string;
  /** A small pool for the test's own queries. */
  readonly sql: Sql;
  drop(): Promise<void>;
}

let counter = 0;

/** What the test database starts from. */
export interface TestDatabaseOptions {
  /** An empty database, with no migration applied, instead of a clone of the migrated template. @default false */
  empty?: boolean;
}

/** Clones the migrated template into a fresh database (or creates an empty one); made inside a test, it is dropped when the test ends. */
export async function createTestDatabase(options: TestDatabaseOptions = {}): Promise<TestDatabase> {
  const template = options.empty ? "template1" : inject("templateDatabase");
  const name = `jetfn_test_${process.pid}_${Date.now()}_${counter++}`;
  const admin = postgres(adminUrl(), { max: 1, onnotice: () => {} });
  try {
    // Cloning needs the template to have no other sessions; retry briefly if another file is cloning.
    for (let tries = 0; ; tries++) {
      try {
        await admin.unsafe(`create database ${name} template ${template}`);
        break;
      } catch (error) {
        if (tries > 50 || !/being accessed by other users/.test((error as Error).message)) throw error;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
  } finally {
    await admin.end();
  }
  const url = databaseUrl(name);
  const sql = postgres(url, { max: 4, onnotice: () => {} });
  const database: TestDatabase = {
    name,
    url,
    sql,
    async drop() {
      await sql.end({ timeout: 2 });
      const dropper = postgres(adminUrl(), { max: 1, onnotice: () => {} });
      await dropper.unsafe(`drop database if exists ${name} with (force)`);
      await dropper.end();
    },
  };
  stopWhenTestEnds(() => database.drop());
  return database;
}
