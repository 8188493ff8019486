-- Audit trail: every row changed in an audited schema gets one row in jetfn.audit_log, written by
-- Postgres itself (statement-level triggers with transition tables), in the same transaction as
-- the change. The runtime stamps each invocation's transaction with set_config('jetfn.function'
-- | 'jetfn.invocation_id' | 'jetfn.attempt', ..., true); writes made outside any function are
-- recorded with those left empty.

create sequence jetfn.audit_log_id_seq as bigint;

-- Partitioned by month so old months can be dropped instead of deleted row by row.
create table jetfn.audit_log (
  id              bigint not null default nextval('jetfn.audit_log_id_seq'),
  logged_at       timestamptz not null default now(),
  txid            bigint not null,
  function        text,
  invocation_id   text,
  attempt         integer,
  db_user         text not null default session_user,
  schema_name     text not null,
  table_name      text not null,
  operation       text not null check (operation in ('INSERT', 'UPDATE', 'DELETE', 'TRUNCATE')),
  pk              jsonb,
  old_row         jsonb,
  new_row         jsonb,
  changed_columns text[],
  primary key (id, logged_at)
) partition by range (logged_at);

alter sequence jetfn.audit_log_id_seq owned by jetfn.audit_log.id;

-- Catches rows for months whose partition does not exist yet, so a write never fails for it.
create table jetfn.audit_log_default partition of jetfn.audit_log default;

-- The questions the log answers: what did an invocation change, what did a function change,
-- what happened to this row, what changed lately.
create index audit_log_invocation_idx on jetfn.audit_log (invocation_id) where invocation_id is not null;
create index audit_log_function_idx on jetfn.audit_log (function, logged_at) where function is not null;
-- Hash: equality is all a row lookup needs, and hashing a jsonb key is cheaper than ordering it.
create index audit_log_row_idx on jetfn.audit_log using hash (pk);
create index audit_log_time_brin on jetfn.audit_log using brin (logged_at);

-- Creates the monthly partitions from `month_from` for `months` months.
create function jetfn.ensure_audit_partitions(month_from date default date_trunc('month', now())::date, months integer default 3)
returns void language plpgsql security definer set search_path = pg_catalog, jetfn as $$
declare
  first_day date;
  partition_name text;
begin
  for i in 0 .. months - 1 loop
    first_day := (date_trunc('month', month_from) + make_interval(months => i))::date;
    partition_name := format('audit_log_%s', to_char(first_day, 'YYYY_MM'));
    if to_regclass(format('jetfn.%I', partition_name)) is null then
      execute format(
        'create table jetfn.%I partition of jetfn.audit_log for values from (%L) to (%L)',
        partition_name, first_day, (first_day + interval '1 month')::date);
    end if;
  end loop;
end
$$;

select jetfn.ensure_audit_partitions();

-- The primary key of a row as jsonb, from the column names the trigger was created with.
create function jetfn.audit_pk(row_data jsonb, key_columns text[]) returns jsonb
language sql immutable parallel safe as $$
  select case
    when key_columns is null or cardinality(key_columns) = 0 then null
    when cardinality(key_columns) = 1 then jsonb_build_object(key_columns[1], row_data -> key_columns[1])
    else (select jsonb_object_agg(k, row_data -> k) from unnest(key_columns) as k)
  end
$$;

-- One trigger function for all tables and operations; TG_ARGV holds the table's primary key columns.
-- Rows are referenced as `changed_row.*`: a bare alias would mean a column if the table had one of that name.
create function jetfn.capture_changes() returns trigger
language plpgsql security definer set search_path = pg_catalog, jetfn as $$
declare
  stamp_function text := nullif(current_setting('jetfn.function', true), '');
  stamp_invocation text := nullif(current_setting('jetfn.invocation_id', true), '');
  stamp_attempt integer := nullif(current_setting('jetfn.attempt', true), '')::integer;
  -- TG_ARGV is indexed from 0; rebuild it as an ordinary array indexed from 1.
  key_columns text[] := array(select unnest(TG_ARGV));
  -- Most tables have a one-column key: build it inline, a function call per row costs more than the rest.
  single_key text := case when cardinality(key_columns) = 1 then key_columns[1] end;
  xact bigint := pg_current_xact_id()::text::bigint;
begin
  if TG_OP = 'INSERT' then
    insert into jetfn.audit_log
      (txid, function, invocation_id, attempt, schema_name, table_name, operation, pk, new_row)
    select xact, stamp_function, stamp_invocation, stamp_attempt, TG_TABLE_SCHEMA, TG_TABLE_NAME, 'INSERT',
           case when single_key is not null then jsonb_build_object(single_key, r -> single_key) else jetfn.audit_pk(r, key_columns) end, r
    from (select to_jsonb(changed_row.*) as r from new_rows changed_row) inserted;
  elsif TG_OP = 'DELETE' then
    insert into jetfn.audit_log
      (txid, function, invocation_id, attempt, schema_name, table_name, operation, pk, old_row)
    select xact, stamp_function, stamp_invocation, stamp_attempt, TG_TABLE_SCHEMA, TG_TABLE_NAME, 'DELETE',
           case when single_key is not null then jsonb_build_object(single_key, r -> single_key) else jetfn.audit_pk(r, key_columns) end, r
    from (select to_jsonb(changed_row.*) as r from old_rows changed_row) deleted;
  elsif TG_OP = 'UPDATE' then
    -- Postgres appends each updated row's old and new version to the two transition tables
    -- together, so rows pair up by position (which also covers tables without a primary key
    -- and updates of the key itself): the two tables are read into arrays and zipped, cheaper
    -- than joining them. Only the changed columns are stored.
    insert into jetfn.audit_log
      (txid, function, invocation_id, attempt, schema_name, table_name, operation, pk, old_row, new_row, changed_columns)
    select xact, stamp_function, stamp_invocation, stamp_attempt, TG_TABLE_SCHEMA, TG_TABLE_NAME, 'UPDATE',
           case when single_key is not null then jsonb_build_object(single_key, pair.after_row -> single_key)
                else jetfn.audit_pk(pair.after_row, key_columns) end,
           diff.old_values, diff.new_values, diff.changed
    from unnest(
      (select array_agg(to_jsonb(changed_row.*)) from old_rows changed_row),
      (select array_agg(to_jsonb(changed_row.*)) from new_rows changed_row)
    ) as pair(before_row, after_row)
    cross join lateral (
      -- One pass over the columns yields the names and both sides' values.
      select array_agg(e.key order by e.key) as changed,
             jsonb_object_agg(e.key, pair.before_row -> e.key) as old_values,
             jsonb_object_agg(e.key, e.value) as new_values
      from jsonb_each(pair.after_row) e
      where (pair.before_row -> e.key) is distinct from e.value
    ) diff
    where diff.changed is not null;
  elsif TG_OP = 'TRUNCATE' then
    insert into jetfn.audit_log (txid, function, invocation_id, attempt, schema_name, table_name, operation)
    values (xact, stamp_function, stamp_invocation, stamp_attempt, TG_TABLE_SCHEMA, TG_TABLE_NAME, 'TRUNCATE');
  end if;
  return null;
end
$$;

-- Primary key columns of a table, in key order (empty when it has none).
create function jetfn.primary_key_columns(target regclass) returns text[]
language sql stable as $$
  select coalesce(array_agg(a.attname::text order by k.ord), '{}')
  from pg_index i
  cross join lateral unnest(i.indkey) with ordinality as k(attnum, ord)
  join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum
  where i.indrelid = target and i.indisprimary
$$;

-- Attaches (or refreshes, when the primary key changed) the audit triggers of one table.
create function jetfn.attach_audit(target regclass) returns boolean
language plpgsql security definer set search_path = pg_catalog, jetfn as $$
declare
  key_columns text[] := jetfn.primary_key_columns(target);
  arguments text := (select coalesce(string_agg(quote_literal(c), ', '), '') from unnest(key_columns) c);
  current_arguments text;
begin
  select pg_get_triggerdef(t.oid) into current_arguments
  from pg_trigger t where t.tgrelid = target and t.tgname = 'jetfn_audit_insert';
  if current_arguments is not null and current_arguments like '%capture_changes(' || arguments || ')' then
    return false;
  end if;
  execute format('drop trigger if exists jetfn_audit_insert on %s', target);
  execute format('drop trigger if exists jetfn_audit_update on %s', target);
  execute format('drop trigger if exists jetfn_audit_delete on %s', target);
  execute format('drop trigger if exists jetfn_audit_truncate on %s', target);
  execute format('create trigger jetfn_audit_insert after insert on %s referencing new table as new_rows
                  for each statement execute function jetfn.capture_changes(%s)', target, arguments);
  execute format('create trigger jetfn_audit_update after update on %s referencing old table as old_rows new table as new_rows
                  for each statement execute function jetfn.capture_changes(%s)', target, arguments);
  execute format('create trigger jetfn_audit_delete after delete on %s referencing old table as old_rows
                  for each statement execute function jetfn.capture_changes(%s)', target, arguments);
  execute format('create trigger jetfn_audit_truncate after truncate on %s
                  for each statement execute function jetfn.capture_changes(%s)', target, arguments);
  return true;
end
$$;

-- Ordinary and partitioned tables of the audited schemas that lack the audit triggers
-- (partitions are covered through their parent).
create function jetfn.unaudited_tables(schemas text[] default array['public']) returns table (schema_name text, table_name text)
language sql stable as $$
  select n.nspname::text, c.relname::text
  from pg_class c
  join pg_namespace n on n.oid = c.relnamespace
  where n.nspname = any(schemas)
    and c.relkind in ('r', 'p')
    and not c.relispartition
    and not exists (select 1 from pg_trigger t where t.tgrelid = c.oid and t.tgname = 'jetfn_audit_insert')
  order by 1, 2
$$;

-- Attaches the audit triggers to every table of the audited schemas that lacks them.
create function jetfn.attach_audit_everywhere(schemas text[] default array['public']) returns integer
language plpgsql security definer set search_path = pg_catalog, jetfn as $$
declare
  attached integer := 0;
  missing record;
begin
  for missing in select * from jetfn.unaudited_tables(schemas) loop
    perform jetfn.attach_audit(format('%I.%I', missing.schema_name, missing.table_name)::regclass);
    attached := attached + 1;
  end loop;
  return attached;
end
$$;

-- Schemas whose tables are audited; the event trigger and the runtime read it.
create table jetfn.audited_schemas (schema_name text primary key);
insert into jetfn.audited_schemas values ('public');

-- Tables created (or re-keyed) later are attached the moment their DDL ends. Event triggers need
-- a superuser; without one the runtime attaches missing tables at start and on every deploy.
create function jetfn.attach_audit_on_ddl() returns event_trigger
language plpgsql as $$
declare
  command record;
begin
  for command in select * from pg_event_trigger_ddl_commands()
    where object_type in ('table') and schema_name in (select s.schema_name from jetfn.audited_schemas s)
  loop
    if exists (select 1 from pg_class c where c.oid = command.objid and c.relkind in ('r', 'p') and not c.relispartition) then
      perform jetfn.attach_audit(command.objid::regclass);
    end if;
  end loop;
end
$$;

do $$
begin
  if (select rolsuper from pg_roles where rolname = current_user) then
    create event trigger jetfn_audit_new_tables on ddl_command_end
      when tag in ('CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO', 'ALTER TABLE')
      execute function jetfn.attach_audit_on_ddl();
  end if;
end
$$;

select jetfn.attach_audit_everywhere(array(select schema_name from jetfn.audited_schemas));
