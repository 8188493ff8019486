import type { Sql } from "postgres";

/**
 * The two textbook audit triggers jetfn's capture is measured against, on tables of their own
 * (outside the audited schemas), each writing to its own log: what a team would write by hand.
 *  - row-level: one plpgsql call and one INSERT per changed row, the rows as jsonb;
 *  - statement-level: transition tables, one INSERT ... SELECT per statement, the rows as jsonb,
 *    an UPDATE's old and new rows paired by primary key.
 * Both read the same stamp settings as jetfn's capture.
 */
export const NAIVE_ROW = "naive row-level trigger (jsonb)";
export const NAIVE_STATEMENT = "naive statement-level trigger (transition tables, jsonb)";

export const NAIVE_TABLES = {
  [NAIVE_ROW]: "bench_naive_row.audit_bench",
  [NAIVE_STATEMENT]: "bench_naive_statement.audit_bench",
} as const;

/** Each naive contender's log. */
export const NAIVE_LOGS = {
  [NAIVE_ROW]: "bench_naive_row.audit_log",
  [NAIVE_STATEMENT]: "bench_naive_statement.audit_log",
} as const;

const STAMP_COLUMNS = `nullif(current_setting('jetfn.function', true), ''), nullif(current_setting('jetfn.invocation_id', true), ''),
  nullif(current_setting('jetfn.attempt', true), '')::integer, txid_current(), tg_table_schema, tg_table_name`;

function logTable(schema: string): string {
  return `create table ${schema}.audit_log (
    id bigserial primary key, logged_at timestamptz not null default now(), function text, invocation_id text,
    attempt integer, txid bigint not null, schema_name text not null, table_name text not null, operation text not null,
    old_row jsonb, new_row jsonb)`;
}

/**
 * The row-level textbook trigger in `schema` (which must exist): its log, its capture function, and
 * its trigger on `table`. Also what a peer's users would put under their own tables by hand.
 */
export function rowLevelAuditSql(schema: string, table: string): string {
  return `
${logTable(schema)};
create function ${schema}.capture() returns trigger language plpgsql as $$
begin
  insert into ${schema}.audit_log (function, invocation_id, attempt, txid, schema_name, table_name, operation, old_row, new_row)
  values (${STAMP_COLUMNS}, tg_op,
          case when tg_op <> 'INSERT' then to_jsonb(old) end, case when tg_op <> 'DELETE' then to_jsonb(new) end);
  return null;
end $$;
create trigger audit after insert or update or delete on ${table}
  for each row execute function ${schema}.capture();`;
}

const ROW_LEVEL = `
create schema bench_naive_row;
create table bench_naive_row.audit_bench (id bigint primary key, n integer not null, note text not null);
${rowLevelAuditSql("bench_naive_row", "bench_naive_row.audit_bench")}`;

const STATEMENT_LEVEL = `
create schema bench_naive_statement;
${logTable("bench_naive_statement")};
create function bench_naive_statement.capture_insert() returns trigger language plpgsql as $$
begin
  insert into bench_naive_statement.audit_log (function, invocation_id, attempt, txid, schema_name, table_name, operation, new_row)
  select ${STAMP_COLUMNS}, 'INSERT', to_jsonb(after_row) from new_rows after_row;
  return null;
end $$;
create function bench_naive_statement.capture_update() returns trigger language plpgsql as $$
begin
  insert into bench_naive_statement.audit_log (function, invocation_id, attempt, txid, schema_name, table_name, operation, old_row, new_row)
  select ${STAMP_COLUMNS}, 'UPDATE', to_jsonb(before_row), to_jsonb(after_row)
  from old_rows before_row join new_rows after_row on after_row.id = before_row.id;
  return null;
end $$;
create function bench_naive_statement.capture_delete() returns trigger language plpgsql as $$
begin
  insert into bench_naive_statement.audit_log (function, invocation_id, attempt, txid, schema_name, table_name, operation, old_row)
  select ${STAMP_COLUMNS}, 'DELETE', to_jsonb(before_row) from old_rows before_row;
  return null;
end $$;
create table bench_naive_statement.audit_bench (id bigint primary key, n integer not null, note text not null);
create trigger audit_insert after insert on bench_naive_statement.audit_bench
  referencing new table as new_rows for each statement execute function bench_naive_statement.capture_insert();
create trigger audit_update after update on bench_naive_statement.audit_bench
  referencing old table as old_rows new table as new_rows for each statement execute function bench_naive_statement.capture_update();
create trigger audit_delete after delete on bench_naive_statement.audit_bench
  referencing old table as old_rows for each statement execute function bench_naive_statement.capture_delete();`;

/** Creates both naive tables with their triggers and logs. */
export async function installNaiveAudit(sql: Sql): Promise<void> {
  await sql.unsafe(ROW_LEVEL);
  await sql.unsafe(STATEMENT_LEVEL);
}
