-- Faster audit capture (issue 3, item 6). What 0002 and 0005 set up stays; this replaces:
--  * UPDATE capture: each audited table gets a generated trigger function that knows its columns,
--    compares old and new values column by column in their own types and builds only the changed
--    columns' JSON, instead of turning both versions into jsonb and diffing them with jsonb_each.
--  * The two BRIN indexes (logged_at, txid) become one over (txid, id, logged_at): one index to
--    maintain per audit row instead of two, and it also covers id.

-- One block-range index answers the time, txid (sealing) and id range questions.
create index audit_log_brin on jetfn.audit_log using brin (txid, id, logged_at);
drop index jetfn.audit_log_time_brin;
drop index jetfn.audit_log_txid_brin;

-- A column's value compared exactly as stored: for types whose equality could call two different
-- values equal (case-insensitive collations, numeric scale, floats' -0, types without `=`), the
-- text forms are compared instead.
create function jetfn.audit_differs_expression(old_value text, new_value text, column_type regtype) returns text
language sql immutable as $$
  select case
    when column_type in ('smallint', 'integer', 'bigint', 'boolean', 'oid', 'uuid', 'date',
                         'timestamp without time zone', 'timestamp with time zone', 'bytea')
      then format('%s is distinct from %s', old_value, new_value)
    when column_type in ('text', 'character varying', 'character', 'name')
      then format('%s collate "C" is distinct from %s collate "C"', old_value, new_value)
    else format('%s::text collate "C" is distinct from %s::text collate "C"', old_value, new_value)
  end
$$;

-- A value as JSON text: integers and booleans print as JSON already, anything else goes through to_json.
create function jetfn.audit_json_expression(value text, column_type regtype) returns text
language sql immutable as $$
  select case
    when column_type in ('smallint', 'integer', 'bigint', 'boolean') then format('coalesce(%s::text, ''null'')', value)
    else format('coalesce(to_json(%s)::text, ''null'')', value)
  end
$$;

-- Name of the generated UPDATE capture function of a table.
create function jetfn.audit_update_function_name(target regclass) returns text
language sql stable as $$
  select format('capture_update_%s', target::oid)
$$;

-- Source of the generated UPDATE capture function of a table, from its current columns and key.
-- Postgres appends each updated row's old and new version to the two transition tables together,
-- so rows pair up by position (which also covers keyless tables and updates of the key itself):
-- both are read into arrays of the table's row type and zipped, cheaper than joining them.
-- Before using its column list, the function checks it against the first new row; if the table
-- changed since it was generated (and nothing refreshed it yet), it falls back to a generic diff.
create function jetfn.audit_update_function_source(target regclass) returns text
language plpgsql stable set search_path = pg_catalog, jetfn as $$
declare
  key_columns text[] := jetfn.primary_key_columns(target);
  table_schema text;
  table_name text;
  columns text[];
  types regtype[];
  aliases text := '';
  differs text := '';
  any_differs text[] := '{}';
  old_json text[] := '{}';
  new_json text[] := '{}';
  changed text[] := '{}';
  pk text;
begin
  select n.nspname, c.relname into table_schema, table_name
  from pg_class c join pg_namespace n on n.oid = c.relnamespace where c.oid = target;
  select coalesce(array_agg(a.attname::text order by a.attnum), '{}'),
         coalesce(array_agg(a.atttypid::regtype order by a.attnum), '{}')
  into columns, types
  from pg_attribute a where a.attrelid = target and a.attnum > 0 and not a.attisdropped;
  if cardinality(columns) = 0 then
    -- A table without columns: nothing can differ, but keep the generated shape valid.
    columns := array['?'];
    types := array['text'::regtype];
  end if;
  for i in 1 .. cardinality(columns) loop
    aliases := aliases || format('o%s, ', i);
    differs := differs || format(', %s as d%s', jetfn.audit_differs_expression('o' || i, 'n' || i, types[i]), i);
    any_differs := any_differs || format('d%s', i);
    old_json := old_json || format('case when d%s then %L || %s end', i, to_json(columns[i])::text || ':',
                                   jetfn.audit_json_expression('o' || i, types[i]));
    new_json := new_json || format('case when d%s then %L || %s end', i, to_json(columns[i])::text || ':',
                                   jetfn.audit_json_expression('n' || i, types[i]));
  end loop;
  -- Changed column names in name order, as jsonb keys have always been listed.
  select array_agg(format('case when d%s then %L end', i, columns[i]) order by columns[i])
  into changed from generate_series(1, cardinality(columns)) i;
  aliases := aliases || (select string_agg(format('n%s', i), ', ') from generate_series(1, cardinality(columns)) i);
  pk := case when cardinality(key_columns) = 0 then 'null::jsonb'
             else format('jsonb_build_object(%s)', (
               select string_agg(format('%L, n%s', k, array_position(columns, k)), ', ') from unnest(key_columns) k))
        end;
  return format($source$
-- Generated by jetfn.attach_audit for %1$I.%2$I; regenerated when the table's columns change.
declare
  stamp_function text := nullif(current_setting('jetfn.function', true), '');
  stamp_invocation text := nullif(current_setting('jetfn.invocation_id', true), '');
  stamp_attempt integer := nullif(current_setting('jetfn.attempt', true), '')::integer;
  xact bigint;
  shape jsonb := (select to_jsonb(changed_row.*) from new_rows changed_row limit 1);
begin
  if shape is null then
    return null;
  end if;
  xact := pg_current_xact_id()::text::bigint;
  -- The generated column list holds while the table keeps its name and columns.
  if TG_TABLE_SCHEMA = %4$L and TG_TABLE_NAME = %5$L and shape - %3$L::text[] = '{}'::jsonb and shape ?& %3$L::text[] then
    insert into jetfn.audit_log
      (txid, function, invocation_id, attempt, schema_name, table_name, operation, pk, old_row, new_row, changed_columns)
    select xact, stamp_function, stamp_invocation, stamp_attempt, TG_TABLE_SCHEMA, TG_TABLE_NAME, 'UPDATE', %6$s,
           ('{' || concat_ws(',', %7$s) || '}')::jsonb,
           ('{' || concat_ws(',', %8$s) || '}')::jsonb,
           array_remove(array[%9$s], null)
    from (
      select *%10$s
      from unnest((select array_agg(row(changed_row.*)::%1$I.%2$I) from old_rows changed_row),
                  (select array_agg(row(changed_row.*)::%1$I.%2$I) from new_rows changed_row)) as pair(%11$s)
      -- Computes each comparison once instead of once per use.
      offset 0
    ) pair
    where %12$s;
  else
    insert into jetfn.audit_log
      (txid, function, invocation_id, attempt, schema_name, table_name, operation, pk, old_row, new_row, changed_columns)
    select xact, stamp_function, stamp_invocation, stamp_attempt, TG_TABLE_SCHEMA, TG_TABLE_NAME, 'UPDATE',
           jetfn.audit_pk(pair.after_row, %13$L::text[]), diff.old_values, diff.new_values, diff.changed
    from unnest(
      (select array_agg(to_jsonb(changed_row.*)) from old_rows changed_row),
      (select array_agg(to_jsonb(changed_row.*)) from new_rows changed_row)
    ) as pair(before_row, after_row)
    cross join lateral (
      select array_agg(e.key order by e.key) as changed,
             jsonb_object_agg(e.key, pair.before_row -> e.key) as old_values,
             jsonb_object_agg(e.key, e.value) as new_values
      from jsonb_each(pair.after_row) e
      -- Text forms, like the generated comparisons: 1.0 -> 1.00 is a change.
      where (pair.before_row -> e.key)::text is distinct from e.value::text
    ) diff
    where diff.changed is not null;
  end if;
  return null;
end
$source$,
    table_schema, table_name, columns, table_schema, table_name, pk,
    array_to_string(old_json, ', '), array_to_string(new_json, ', '), array_to_string(changed, ', '),
    differs, aliases, array_to_string(any_differs, ' or '), key_columns);
end
$$;

-- Attaches (or refreshes, when the primary key or the columns changed) the audit triggers of one
-- table: INSERT, DELETE and TRUNCATE go through jetfn.capture_changes, UPDATE through the table's
-- generated function. Returns whether anything changed.
create or replace function jetfn.attach_audit(target regclass) returns boolean
language plpgsql security definer set search_path = pg_catalog, jetfn as $$
declare
  key_columns text[] := jetfn.primary_key_columns(target);
  arguments text := (select coalesce(string_agg(quote_literal(c), ', '), '') from unnest(key_columns) c);
  update_function text := jetfn.audit_update_function_name(target);
  update_source text := jetfn.audit_update_function_source(target);
  current_arguments text;
  current_update_function text;
  current_source text;
begin
  select pg_get_triggerdef(t.oid) into current_arguments
  from pg_trigger t where t.tgrelid = target and t.tgname = 'jetfn_audit_insert';
  select p.proname, p.prosrc into current_update_function, current_source
  from pg_trigger t join pg_proc p on p.oid = t.tgfoid
  where t.tgrelid = target and t.tgname = 'jetfn_audit_update' and p.pronamespace = 'jetfn'::regnamespace;
  if current_arguments like '%capture_changes(' || arguments || ')'
     and current_update_function = update_function
     and current_source = update_source then
    return false;
  end if;
  execute format('create or replace function jetfn.%I() returns trigger language plpgsql security definer
                  set search_path = pg_catalog, jetfn as %L', update_function, update_source);
  execute format('drop trigger if exists jetfn_audit_insert on %s', target);
  execute format('drop trigger if exists jetfn_audit_update on %s', target);
  execute format('drop trigger if exists jetfn_audit_delete on %s', target);
  execute format('drop trigger if exists jetfn_audit_truncate on %s', target);
  execute format('create trigger jetfn_audit_insert after insert on %s referencing new table as new_rows
                  for each statement execute function jetfn.capture_changes(%s)', target, arguments);
  execute format('create trigger jetfn_audit_update after update on %s referencing old table as old_rows new table as new_rows
                  for each statement execute function jetfn.%I()', target, update_function);
  execute format('create trigger jetfn_audit_delete after delete on %s referencing old table as old_rows
                  for each statement execute function jetfn.capture_changes(%s)', target, arguments);
  execute format('create trigger jetfn_audit_truncate after truncate on %s
                  for each statement execute function jetfn.capture_changes(%s)', target, arguments);
  return true;
end
$$;

-- Generated UPDATE capture functions whose table is gone.
create function jetfn.drop_orphaned_audit_functions() returns integer
language plpgsql security definer set search_path = pg_catalog, jetfn as $$
declare
  orphan record;
  dropped integer := 0;
begin
  for orphan in
    select p.proname from pg_proc p
    where p.pronamespace = 'jetfn'::regnamespace and p.proname ~ '^capture_update_[0-9]+$'
      and not exists (select 1 from pg_trigger t where t.tgfoid = p.oid)
  loop
    execute format('drop function jetfn.%I()', orphan.proname);
    dropped := dropped + 1;
  end loop;
  return dropped;
end
$$;

-- Attaches the audit triggers to every table of the audited schemas that lacks them, and refreshes
-- those whose generated function no longer matches the table (where no event trigger did it at
-- ALTER TABLE time). Returns the tables attached or refreshed.
create or replace function jetfn.attach_audit_everywhere(schemas text[] default array['public']) returns integer
language plpgsql security definer set search_path = pg_catalog, jetfn as $$
declare
  attached integer := 0;
  candidate record;
begin
  for candidate in
    select c.oid from pg_class c join pg_namespace n on n.oid = c.relnamespace
    where n.nspname = any(schemas) and c.relkind in ('r', 'p') and not c.relispartition
    order by n.nspname, c.relname
  loop
    if jetfn.attach_audit(candidate.oid::regclass) then
      attached := attached + 1;
    end if;
  end loop;
  perform jetfn.drop_orphaned_audit_functions();
  return attached;
end
$$;

-- Every table audited so far (including ones attached by hand outside the audited schemas) moves
-- to its generated UPDATE function.
select jetfn.attach_audit(t.tgrelid::regclass)
from pg_trigger t where t.tgname = 'jetfn_audit_insert';
