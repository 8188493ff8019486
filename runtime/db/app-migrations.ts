import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import { JetfnError } from "../support/errors";
import { type MigrationFile, migrationFile } from "./migration-file";

/**
 * Ledger names of the app's migrations start with this, apart from jetfn's (`0001_jetfn_*.sql`):
 * drizzle-kit numbers its files from 0000 too.
 */
export const APP_MIGRATION_PREFIX = "app:";

/** One entry of drizzle-kit's `meta/_journal.json`: the migrations in the order they were generated. */
interface JournalEntry {
  idx: number;
  tag: string;
}

/**
 * The app's migrations in a drizzle-kit `out` folder, in the journal's order (what `drizzle-kit
 * generate` wrote; a `.sql` file the journal does not list is not a migration, as for drizzle-kit
 * itself). A folder that does not exist holds none: an app may have no tables of its own.
 */
export async function readAppMigrations(directory: string): Promise<MigrationFile[]> {
  const journalFile = path.join(directory, "meta", "_journal.json");
  const text = await readFile(journalFile, "utf8").catch((error: NodeJS.ErrnoException) => {
    if (error.code === "ENOENT") return undefined;
    throw error;
  });
  if (text === undefined) {
    await assertNoStraySql(directory);
    return [];
  }
  const entries = parseJournal(journalFile, text);
  return Promise.all(
    entries.map(async (entry) => {
      const sqlFile = path.join(directory, `${entry.tag}.sql`);
      const sql = await readFile(sqlFile, "utf8").catch((error: unknown) => {
        throw new JetfnError("E_CONFIG_INVALID", `${journalFile} lists ${entry.tag}, but ${sqlFile} cannot be read`, {
          cause: error,
        });
      });
      return migrationFile(`${APP_MIGRATION_PREFIX}${entry.tag}.sql`, sql);
    }),
  );
}

function parseJournal(file: string, text: string): JournalEntry[] {
  let entries: unknown;
  try {
    entries = (JSON.parse(text) as { entries?: unknown }).entries;
  } catch (error) {
    throw new JetfnError("E_CONFIG_INVALID", `${file} is not JSON: ${(error as Error).message}`, { cause: error });
  }
  const valid =
    Array.isArray(entries) &&
    entries.every(
      (entry: Partial<JournalEntry>) =>
        typeof entry?.idx === "number" && typeof entry.tag === "string" && /^[\w-]+$/.test(entry.tag),
    );
  if (!valid) throw new JetfnError("E_CONFIG_INVALID", `${file} is not a drizzle-kit journal (entries of idx, tag)`);
  return [...(entries as JournalEntry[])].sort((a, b) => a.idx - b.idx);
}

/** SQL files in a folder without a journal were meant as migrations, but would never run: say so. */
async function assertNoStraySql(directory: string): Promise<void> {
  const names = await readdir(directory).catch(() => [] as string[]);
  if (!names.some((name) => name.endsWith(".sql"))) return;
  throw new JetfnError(
    "E_CONFIG_INVALID",
    `${directory} holds .sql files but no meta/_journal.json: app migrations come from \`drizzle-kit generate\` (its \`out\` folder, JETFN_MIGRATIONS)`,
  );
}
