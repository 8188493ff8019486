import type { Sql } from "postgres";

/** Changes the runtime's role made outside any invocation, as `jetfn audit --check` reports them. */
export interface UnattributedWrites {
  /** The role whose writes outside invocations are suspect. */
  role: string;
  rows: number;
  /** schema.table of each table they touched. */
  tables: string[];
  first: string | null;
  last: string | null;
}

/** The runtime's role used by schema/roles.sql. */
export const DEFAULT_RUNTIME_ROLE = "jetfn_runtime";

/**
 * Audit rows with no function that the runtime's role wrote. The runtime itself writes app rows
 * only inside invocations, stamped; such a row comes from a connection of its own that someone
 * opened with the runtime's credentials (a handler that read DATABASE_URL, say) and is flagged.
 * `since` bounds the scan (the log's BRIN index on the time keeps it short).
 */
export async function unattributedWrites(sql: Sql, role: string, since?: Date): Promise<UnattributedWrites> {
  const [row] = await sql<{ rows: number; tables: string[] | null; first: Date | null; last: Date | null }[]>`
    select count(*)::int as rows,
           array_agg(distinct schema_name || '.' || table_name) as tables,
           min(logged_at) as first, max(logged_at) as last
    from jetfn.audit_log
    where function is null and db_user = ${role} and logged_at >= ${(since ?? new Date(0)).toISOString()}::timestamptz`;
  return {
    role,
    rows: row?.rows ?? 0,
    tables: row?.tables ?? [],
    first: row?.first ? new Date(row.first).toISOString() : null,
    last: row?.last ? new Date(row.last).toISOString() : null,
  };
}
