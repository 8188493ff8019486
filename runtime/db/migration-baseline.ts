import type { Sql } from "postgres";
import { JetfnError } from "../support/errors";

/**
 * jetfn's schema migration that replaced the migrations below (squashed before any release):
 * each object once, in its final form. It makes the same schema as they did.
 */
export const BASELINE_MIGRATION = "0001_jetfn_baseline.sql";

/** The migrations the baseline replaced, as a database that applied them names them in its ledger. */
export const SQUASHED_MIGRATIONS: readonly string[] = Object.freeze([
  "0001_jetfn_invocations.sql",
  "0002_jetfn_audit.sql",
  "0003_jetfn_dead_letters.sql",
  "0004_jetfn_outbox.sql",
  "0005_jetfn_audit_seals.sql",
  "0006_jetfn_audit_fast_capture.sql",
  "0007_jetfn_audit_lookup.sql",
  "0008_jetfn_audit_lean_capture.sql",
  "0009_jetfn_group_completion.sql",
  "0010_jetfn_audit_row_text_inlined.sql",
  "0011_jetfn_audit_reads_at_scale.sql",
  "0016_jetfn_audit_new_tables.sql",
  "0017_jetfn_invocation_owner.sql",
  "0018_jetfn_outbox_rules.sql",
  "0019_jetfn_invocation_checks.sql",
  "0020_jetfn_audit_row_text_v2.sql",
  "0021_jetfn_flow_control.sql",
  "0022_jetfn_group_check_per_job.sql",
]);

/**
 * A development database migrated before the squash already has the baseline's schema: when its
 * ledger holds every squashed migration, the baseline is recorded as applied in their place,
 * without running it. One holding only some of them has a schema no migration leads from, so it
 * is refused with what to do. Runs under the migration lock, before pending migrations are read.
 */
export async function adoptBaseline(sql: Sql, baselineChecksum: string | undefined): Promise<void> {
  if (baselineChecksum === undefined) return;
  const rows = await sql<{ name: string }[]>`
    select name from jetfn.migrations where name in ${sql([...SQUASHED_MIGRATIONS])}`;
  if (rows.length === 0) return;
  const recorded = new Set(rows.map((row) => row.name));
  const missing = SQUASHED_MIGRATIONS.filter((name) => !recorded.has(name));
  if (missing.length > 0) throw partialLedgerError(missing);
  // One statement, so the ledger never lacks both the old rows and the baseline.
  await sql`
    with squashed as (delete from jetfn.migrations where name in ${sql([...SQUASHED_MIGRATIONS])})
    insert into jetfn.migrations (name, checksum) values (${BASELINE_MIGRATION}, ${baselineChecksum})
    on conflict (name) do nothing`;
}

function partialLedgerError(missing: readonly string[]): JetfnError {
  return new JetfnError(
    "E_CONFIG_INVALID",
    `this database was migrated by a jetfn from before ${BASELINE_MIGRATION} replaced jetfn's migrations ` +
      `0001-0022, and it lacks ${missing.length} of them (${missing.join(", ")}), so no migration leads ` +
      "from its schema to the current one. Drop and recreate the (development) database and run " +
      "`npx jetfn migrate`, or first run `jetfn migrate` of a jetfn from before the baseline, which applies " +
      "them all; this jetfn then records the baseline in their place (docs/database.md, Migrations).",
  );
}
