import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { Sql } from "postgres";
import { JetfnError } from "../support/errors";
import { PACKAGE_ROOT } from "../support/package-root";
import { APP_MIGRATION_PREFIX, readAppMigrations } from "./app-migrations";
import { adoptBaseline, BASELINE_MIGRATION } from "./migration-baseline";
import { type MigrationFile, migrationFile } from "./migration-file";

/** jetfn's migrations (`0xxx_jetfn_*`), applied in name order, before the app's. */
export const DEFAULT_MIGRATIONS_DIR = path.join(PACKAGE_ROOT, "schema", "migrations");

/** Which migrations to apply or check. */
export interface MigrationSources {
  /** jetfn's own migrations. @default DEFAULT_MIGRATIONS_DIR */
  directory?: string;
  /**
   * The app's: a drizzle-kit `out` folder (`meta/_journal.json` and its `.sql` files), applied after
   * jetfn's, in the journal's order; a folder that does not exist holds none. @default none
   */
  appDirectory?: string;
  /** Told each time a migration gave way to a transaction holding a table it changes, and tries again. */
  onLockWait?: (name: string, tries: number) => void;
}

/**
 * Longest one of jetfn's migrations waits for a lock before it gives way. A migration that changes a
 * table (`alter table`) queues for the table's strongest lock, and every statement on that table
 * queues behind it: waiting without bound for a long transaction (a report reading the audit log, a
 * slow handler) would stall every audited write of the app meanwhile. So it waits this long, rolls
 * back, and tries again a second later, for about five minutes. jetfn's own migrations only: they
 * are short, and each is one transaction; an app's are its own (a backfill may wait for row locks,
 * a file may commit halfway), and wait as they are written to.
 */
export const MIGRATION_LOCK_TIMEOUT_MS = 2_000;
const LOCK_TRIES = 100;
/** The log line of a migration that gave way (see onLockWait). */
export const MIGRATION_WAITS =
  "A migration gave way to a transaction holding a table it changes (so the app's writes do not queue behind it); trying again.";
const LOCK_RETRY_MS = 1_000;
/** lock_not_available (a lock_timeout) and deadlock_detected: the migration gave way. */
const GAVE_WAY = new Set(["55P03", "40P01"]);

/** One migration file and what the database knows of it. */
export interface MigrationState {
  name: string;
  applied: boolean;
  /** The file changed after it was applied. */
  modified: boolean;
}

// Any constant works; it only has to be the same for every process that migrates.
const MIGRATION_LOCK_KEY = 7_423_001;

/**
 * Applies pending migrations, jetfn's then the app's, each in its own transaction, all under one
 * advisory lock (two processes migrating at once take turns). The app's tables get their audit
 * capture from jetfn's event trigger, or from `ensureAuditCoverage`, which every caller runs next.
 */
export async function migrate(sql: Sql, sources: MigrationSources = {}): Promise<string[]> {
  const files = await readMigrations(sources);
  const connection = await sql.reserve();
  try {
    await connection`select pg_advisory_lock(${MIGRATION_LOCK_KEY})`;
    await ensureLedger(connection);
    await adoptBaseline(connection, files.find((file) => file.name === BASELINE_MIGRATION)?.checksum);
    const applied = await appliedChecksums(connection);
    const done: string[] = [];
    for (const file of files) {
      if (applied.has(file.name)) continue;
      const bounded = !file.name.startsWith(APP_MIGRATION_PREFIX);
      const lockTimeout = bounded ? `set local lock_timeout = '${MIGRATION_LOCK_TIMEOUT_MS}ms';\n` : "";
      for (let tries = 1; ; tries++) {
        try {
          await connection.unsafe(`begin;\n${lockTimeout}${file.sql}\n;`);
          await connection`insert into jetfn.migrations (name, checksum) values (${file.name}, ${file.checksum})`;
          await connection.unsafe("commit");
          break;
        } catch (error) {
          await connection.unsafe("rollback").catch(() => undefined);
          const gaveWay = bounded && GAVE_WAY.has((error as { code?: string }).code ?? "");
          if (gaveWay && tries < LOCK_TRIES) {
            sources.onLockWait?.(file.name, tries);
            await sleep(LOCK_RETRY_MS);
            continue;
          }
          const why = gaveWay
            ? `it could not take the locks it needs in ${LOCK_TRIES} tries: a transaction kept holding a table it changes (${(error as Error).message})`
            : (error as Error).message;
          throw new JetfnError("E_INTERNAL", `migration ${file.name} failed: ${why}`, { cause: error });
        }
      }
      done.push(file.name);
    }
    return done;
  } finally {
    await connection`select pg_advisory_unlock(${MIGRATION_LOCK_KEY})`.catch(() => undefined);
    connection.release();
  }
}

/** Lists every migration file with whether it is applied. */
export async function migrationStatus(sql: Sql, sources: MigrationSources = {}): Promise<MigrationState[]> {
  const files = await readMigrations(sources);
  const [{ exists }] = (await sql`select to_regclass('jetfn.migrations') is not null as exists`) as unknown as [
    { exists: boolean },
  ];
  const applied = exists ? await appliedChecksums(sql) : new Map<string, string>();
  return files.map((file) => ({
    name: file.name,
    applied: applied.has(file.name),
    modified: applied.has(file.name) && applied.get(file.name) !== file.checksum,
  }));
}

/** Throws E_CONFIG_INVALID listing pending migrations, so a runtime never runs on an old schema. */
export async function assertMigrated(sql: Sql, sources: MigrationSources = {}): Promise<void> {
  const pending = (await migrationStatus(sql, sources)).filter((state) => !state.applied);
  if (pending.length > 0) {
    throw new JetfnError(
      "E_CONFIG_INVALID",
      `the database is missing ${pending.length} migration(s) (${pending.map((state) => state.name).join(", ")}); run \`npx jetfn migrate\``,
    );
  }
}

async function readMigrations(sources: MigrationSources): Promise<MigrationFile[]> {
  const directory = sources.directory ?? DEFAULT_MIGRATIONS_DIR;
  const names = (await readdir(directory)).filter((name) => name.endsWith(".sql")).sort();
  const own = await Promise.all(
    names.map(async (name) => migrationFile(name, await readFile(path.join(directory, name), "utf8"))),
  );
  const app = sources.appDirectory ? await readAppMigrations(sources.appDirectory) : [];
  return [...own, ...app];
}

async function ensureLedger(sql: Sql): Promise<void> {
  // `create schema if not exists` needs CREATE on the database even when the schema exists, and
  // jetfn_owner (schema/roles.sql), which migrates in production, does not have it.
  await sql.unsafe(`
    do $$ begin if to_regnamespace('jetfn') is null then create schema jetfn; end if; end $$;
    create table if not exists jetfn.migrations (
      name text primary key,
      checksum text not null,
      applied_at timestamptz not null default now()
    );
  `);
}

async function appliedChecksums(sql: Sql): Promise<Map<string, string>> {
  const rows = await sql<{ name: string; checksum: string }[]>`select name, checksum from jetfn.migrations`;
  return new Map(rows.map((row) => [row.name, row.checksum]));
}
