import type { Sql } from "postgres";

/** A table of an audited schema that has no audit triggers. */
export interface UncoveredTable {
  schema: string;
  table: string;
}

/**
 * Makes sure every table of the audited schemas carries the audit triggers and that the coming
 * months have audit partitions. Runs at start and after every deploy, for databases where no
 * event trigger could be installed (that needs a superuser). Returns the tables it attached.
 */
export async function ensureAuditCoverage(sql: Sql, schemas: readonly string[]): Promise<number> {
  await sql`select jetfn.ensure_audit_partitions()`;
  const [row] = await sql<
    { attached: number }[]
  >`select jetfn.attach_audit_everywhere(string_to_array(${schemas.join(",")}, ',')) as attached`;
  return row?.attached ?? 0;
}

/** Tables of the audited schemas that are not covered (what `jetfn audit --check` reports). */
export async function uncoveredTables(sql: Sql, schemas: readonly string[]): Promise<UncoveredTable[]> {
  const rows = await sql<{ schema_name: string; table_name: string }[]>`
    select schema_name, table_name from jetfn.unaudited_tables(string_to_array(${schemas.join(",")}, ','))`;
  return rows.map((row) => ({ schema: row.schema_name, table: row.table_name }));
}
