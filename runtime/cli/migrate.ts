import { resolveConfig } from "../config";
import { ensureAuditCoverage } from "../db/audit-coverage";
import { connectDatabase } from "../db/client";
import { MIGRATION_WAITS, migrate } from "../db/migrate";
import { createLogger } from "../support/logger";
import { printJson } from "./output";
import { resolveDatabaseUrl, type StartedService } from "./services";

/**
 * `jetfn migrate`: applies pending migrations to DATABASE_URL (or the embedded Postgres), jetfn's
 * then the app's (drizzle-kit's folder, JETFN_MIGRATIONS), then attaches or refreshes the audit
 * triggers of the audited schemas' tables.
 */
export async function migrateCommand(options: { json?: boolean }): Promise<void> {
  const config = resolveConfig();
  // JSON: production migrates too, and its install has no pino-pretty.
  const logger = createLogger({ level: "warn", destination: process.stderr });
  const started: StartedService[] = [];
  try {
    const url = await resolveDatabaseUrl(config, logger, started, true);
    const database = connectDatabase({ url, poolSize: 2 });
    try {
      const applied = await migrate(database.sql, {
        appDirectory: config.migrationsDir,
        onLockWait: (name, tries) => logger.warn({ migration: name, tries }, MIGRATION_WAITS),
      });
      // Tables a migration created or altered get their audit capture (re)generated now, also where
      // no event trigger does it at DDL time; the runtime does the same at start and on deploy.
      await ensureAuditCoverage(database.sql, config.auditSchemas);
      if (options.json) printJson({ applied });
      else process.stdout.write(applied.length ? `applied: ${applied.join(", ")}\n` : "nothing to apply\n");
    } finally {
      await database.close();
    }
  } finally {
    for (const service of started) await service.stop();
  }
}
