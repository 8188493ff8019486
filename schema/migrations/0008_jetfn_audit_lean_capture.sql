-- Leaner audit capture (issue 3, item 6). What 0002-0007 set up stays; this changes:
--  * jetfn.audit_log loses its primary key and its CHECK on operation: the table is append-only and
--    written only by the capture functions, and the key's b-tree was the costliest index insert
--    left per audit row. id still comes from its sequence. Rows are found by the BRIN index over
--    (txid, id, logged_at) from 0006, and jetfn.audit_lookup now also keeps each sealed row's txid.
--  * pk, old_row and new_row become json instead of jsonb: json is stored as the text it was built
--    as, far cheaper to build than jsonb's parsed form. Queries that need jsonb operators cast.
--    Rows already in the log keep their exact text (a jsonb value cast to json is its jsonb text),
--    so seals made before this migration still verify.
--  * INSERT and DELETE capture go through generated per-table functions too (UPDATE did since 0006):
--    set-wise over the transition table with row_to_json and the table's key columns, no per-row
--    plpgsql. The generated functions carry no SET search_path (a SET clause costs every call):
--    every function, type, operator and collation they use is schema-qualified (they run as the
--    log's owner with the writer's search_path), and the writer's stamp settings are read once per
--    statement.

alter table jetfn.audit_log drop constraint audit_log_pkey;
alter table jetfn.audit_log drop constraint audit_log_operation_check;
alter table jetfn.audit_log
  alter column pk type json using pk::json,
  alter column old_row type json using old_row::json,
  alter column new_row type json using new_row::json;

-- The BRIN index from 0006 again, now summarizing each block range as soon as the next one starts
-- (autovacuum does it in the background). A range only counts for lookups once summarized; until
-- then every query scans it, which is right, only slower. The range being filled stays unsummarized
-- so writers never widen a summary row by row.
drop index jetfn.audit_log_brin;
create index audit_log_brin on jetfn.audit_log using brin (txid, id, logged_at) with (autosummarize = on);

-- Sealed rows are fetched by (txid, id) through the BRIN index, so the lookup keeps the txid.
alter table jetfn.audit_lookup add column txid bigint;
update jetfn.audit_lookup k set txid = l.txid from jetfn.audit_log l where l.id = k.id and l.logged_at = k.logged_at;

-- As in 0007, with the txid in the lookup; the lookup's key stays jsonb (its hash index needs it).
create or replace function jetfn.seal_audit(max_rows integer default 10000) returns integer
language plpgsql security definer set search_path = pg_catalog, jetfn as $$
declare
  horizon bigint := pg_snapshot_xmin(pg_current_snapshot())::text::bigint;
  previous jetfn.audit_seals;
  start_hash text;
  last_row record;
  sealed record;
begin
  if not pg_try_advisory_xact_lock(7423002) then
    return 0;
  end if;
  select * into previous from jetfn.audit_seals order by seq desc limit 1;
  if previous.seq is null then
    select a.hash into start_hash from jetfn.audit_anchors a order by a.seq desc limit 1;
    start_hash := coalesce(start_hash, 'genesis');
    previous.seq := coalesce((select max(a.seq) from jetfn.audit_anchors a), 0);
    previous.last_txid := 0;
    previous.last_id := 0;
    previous.hash := start_hash;
  end if;
  select l.txid, l.id into last_row
  from (
    select l.txid, l.id from jetfn.audit_log l
    where l.txid >= previous.last_txid and l.txid < horizon
      and (l.txid, l.id) > (previous.last_txid, previous.last_id)
    order by l.txid, l.id
    limit max_rows
  ) l
  order by l.txid desc, l.id desc
  limit 1;
  if last_row.txid is null then
    return 0;
  end if;
  select * into sealed from jetfn.audit_range_hash(previous.hash, previous.last_txid, previous.last_id, last_row.txid, last_row.id);
  insert into jetfn.audit_seals
    (seq, after_txid, after_id, last_txid, last_id, row_count, first_logged_at, last_logged_at, previous_hash, hash)
  select previous.seq + 1, previous.last_txid, previous.last_id, last_row.txid, last_row.id, sealed.row_count,
         min(l.logged_at), max(l.logged_at), previous.hash, sealed.hash
  from jetfn.audit_log l
  where l.txid >= previous.last_txid and l.txid <= last_row.txid
    and (l.txid, l.id) > (previous.last_txid, previous.last_id) and (l.txid, l.id) <= (last_row.txid, last_row.id);
  insert into jetfn.audit_lookup (id, txid, logged_at, function, invocation_id, schema_name, table_name, pk)
  select l.id, l.txid, l.logged_at, l.function, l.invocation_id, l.schema_name, l.table_name, l.pk::jsonb
  from jetfn.audit_log l
  where l.txid >= previous.last_txid and l.txid <= last_row.txid
    and (l.txid, l.id) > (previous.last_txid, previous.last_id) and (l.txid, l.id) <= (last_row.txid, last_row.id);
  return sealed.row_count;
end
$$;

-- The head of every generated capture function. Names resolve through the writer's search_path
-- (there is no SET clause), so every one is schema-qualified; unqualified names in its queries mean
-- the function's variables (the table's columns are always qualified, so a column named like a
-- variable does not clash).
create function jetfn.audit_function_head() returns text
language sql immutable as $$
  select $head$#variable_conflict use_variable
declare
  stamp_function pg_catalog.text := pg_catalog.current_setting('jetfn.function', true);
  stamp_invocation pg_catalog.text := pg_catalog.current_setting('jetfn.invocation_id', true);
  stamp_attempt pg_catalog.text := pg_catalog.current_setting('jetfn.attempt', true);
  xact pg_catalog.int8 := pg_catalog.pg_current_xact_id()::pg_catalog.text::pg_catalog.int8;$head$
$$;

-- Read once per statement: an empty setting (left over from an earlier transaction) means none.
create function jetfn.audit_function_stamp() returns text
language sql immutable as $$
  select $stamp$
  if stamp_function operator(pg_catalog.=) '' then stamp_function := null; end if;
  if stamp_invocation operator(pg_catalog.=) '' then stamp_invocation := null; end if;
  if stamp_attempt operator(pg_catalog.=) '' then stamp_attempt := null; end if;$stamp$
$$;

-- A value as JSON text (as in 0006), qualified.
create or replace function jetfn.audit_json_expression(value text, column_type regtype) returns text
language sql immutable as $$
  select case
    when column_type in ('smallint', 'integer', 'bigint', 'boolean') then format('coalesce(%s::pg_catalog.text, ''null'')', value)
    else format('coalesce(pg_catalog.to_json(%s)::pg_catalog.text, ''null'')', value)
  end
$$;

-- The primary key as a json expression, from the key columns' names, the expressions holding their
-- values and their types. Concatenated text cast to json once: cheaper per row than json_build_object.
create function jetfn.audit_pk_expression(key_columns text[], key_values text[], key_types regtype[]) returns text
language sql immutable as $$
  select case when cardinality(key_columns) = 0 then 'null::pg_catalog.json'
    else format('(%L operator(pg_catalog.||) %s operator(pg_catalog.||) ''}'')::pg_catalog.json',
                '{' || to_json(key_columns[1])::text || ':',
                (select string_agg(case when i = 1 then jetfn.audit_json_expression(key_values[i], key_types[i])
                                        else format('%L operator(pg_catalog.||) %s', ',' || to_json(key_columns[i])::text || ':',
                                                    jetfn.audit_json_expression(key_values[i], key_types[i])) end,
                                   ' operator(pg_catalog.||) ' order by i)
                 from generate_series(1, cardinality(key_columns)) i))
  end
$$;

-- The types of a table's columns, by name.
create function jetfn.audit_column_types(target regclass, column_names text[]) returns regtype[]
language sql stable as $$
  select coalesce(array_agg(a.atttypid::regtype order by c.ord), '{}')
  from unnest(column_names) with ordinality as c(name, ord)
  join pg_attribute a on a.attrelid = target and a.attname = c.name and not a.attisdropped
$$;

-- Name of a table's generated capture function for `operation` (INSERT, UPDATE or DELETE).
create function jetfn.audit_function_name(target regclass, operation text) returns text
language sql stable as $$
  select format('capture_%s_%s', lower(operation), target::oid)
$$;

-- Source of the generated INSERT or DELETE capture function of a table. The row goes through
-- row_to_json, which is right whatever columns the table has now. The key is built from the key
-- columns by name: if one is renamed or dropped and nothing regenerated the function yet (no
-- event trigger, no runtime start or deploy since), the capture fails loudly ("column ... does not
-- exist") and so does the write, rather than record a row without its key.
create function jetfn.audit_row_function_source(target regclass, operation text) returns text
language plpgsql stable set search_path = pg_catalog, jetfn as $$
declare
  key_columns text[] := jetfn.primary_key_columns(target);
begin
  return format($source$
-- Generated by jetfn.attach_audit for %1$s %2$s; regenerated when the table's key changes.
%3$s
begin%4$s
  insert into jetfn.audit_log
    (txid, function, invocation_id, attempt, schema_name, table_name, operation, pk, %5$s)
  select xact, stamp_function, stamp_invocation, stamp_attempt::pg_catalog.int4, TG_TABLE_SCHEMA, TG_TABLE_NAME, %2$L,
         %6$s, pg_catalog.row_to_json(changed_row.*)
  from %7$s changed_row;
  return null;
end
$source$,
    target::oid, operation, jetfn.audit_function_head(), jetfn.audit_function_stamp(),
    case operation when 'INSERT' then 'new_row' else 'old_row' end,
    jetfn.audit_pk_expression(key_columns,
                              array(select format('changed_row.%I', k) from unnest(key_columns) k),
                              jetfn.audit_column_types(target, key_columns)),
    case operation when 'INSERT' then 'new_rows' else 'old_rows' end);
end
$$;

-- A column's value compared exactly as stored (as in 0006), with every name qualified. For types
-- whose equality could call two different values equal (case-insensitive collations, numeric scale,
-- floats' -0, types without `=`), the text forms are compared.
create or replace function jetfn.audit_differs_expression(old_value text, new_value text, column_type regtype) returns text
language sql immutable as $$
  select format('case when %1$s is null or %2$s is null then (%1$s is null) operator(pg_catalog.<>) (%2$s is null) else not (%3$s operator(pg_catalog.=) %4$s) end',
    old_value, new_value,
    case when column_type in ('smallint', 'integer', 'bigint', 'boolean', 'oid', 'uuid', 'date',
                              'timestamp without time zone', 'timestamp with time zone', 'bytea') then old_value
         when column_type in ('text', 'character varying', 'character', 'name') then old_value || '::pg_catalog.text collate pg_catalog."C"'
         else old_value || '::pg_catalog.text collate pg_catalog."C"' end,
    case when column_type in ('smallint', 'integer', 'bigint', 'boolean', 'oid', 'uuid', 'date',
                              'timestamp without time zone', 'timestamp with time zone', 'bytea') then new_value
         else new_value || '::pg_catalog.text collate pg_catalog."C"' end)
$$;

-- Source of the generated UPDATE capture function of a table (as in 0006: old and new rows zipped
-- by position, compared column by column in their own types), writing json. Columns are taken by
-- position from the table's row type, so before using its column list the function checks the
-- first new row's column names, in order, against it: a column added, dropped, renamed or moved
-- since it was generated (and nothing refreshed it yet) sends the statement down a generic,
-- name-keyed diff instead of pairing values with the wrong names.
create or replace function jetfn.audit_update_function_source(target regclass) returns text
language plpgsql stable set search_path = pg_catalog, jetfn as $$
declare
  key_columns text[] := jetfn.primary_key_columns(target);
  table_type text;
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
  select format('%I.%I', n.nspname, c.relname) into table_type
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
    old_json := old_json || format('case when d%s then %L operator(pg_catalog.||) %s end', i, to_json(columns[i])::text || ':',
                                   jetfn.audit_json_expression('o' || i, types[i]));
    new_json := new_json || format('case when d%s then %L operator(pg_catalog.||) %s end', i, to_json(columns[i])::text || ':',
                                   jetfn.audit_json_expression('n' || i, types[i]));
  end loop;
  -- Changed column names in name order, as they have always been listed.
  select array_agg(format('case when d%s then %L::pg_catalog.text end', i, columns[i]) order by columns[i])
  into changed from generate_series(1, cardinality(columns)) i;
  aliases := aliases || (select string_agg(format('n%s', i), ', ') from generate_series(1, cardinality(columns)) i);
  pk := jetfn.audit_pk_expression(key_columns,
                                  array(select format('n%s', array_position(columns, k)) from unnest(key_columns) k),
                                  jetfn.audit_column_types(target, key_columns));
  return format($source$
-- Generated by jetfn.attach_audit for %1$s; regenerated when the table's columns change.
%2$s
  shape pg_catalog.text[];
begin
  shape := (select pg_catalog.array_agg(k.k) from pg_catalog.json_object_keys(
             (select pg_catalog.row_to_json(changed_row.*) from new_rows changed_row limit 1)) k);
  if shape is null then
    return null;
  end if;%3$s
  if shape operator(pg_catalog.=) %4$L::pg_catalog.text[] then
    insert into jetfn.audit_log
      (txid, function, invocation_id, attempt, schema_name, table_name, operation, pk, old_row, new_row, changed_columns)
    select xact, stamp_function, stamp_invocation, stamp_attempt::pg_catalog.int4, TG_TABLE_SCHEMA, TG_TABLE_NAME, 'UPDATE', %5$s,
           (pg_catalog.concat('{', pg_catalog.concat_ws(',', %6$s), '}'))::pg_catalog.json,
           (pg_catalog.concat('{', pg_catalog.concat_ws(',', %7$s), '}'))::pg_catalog.json,
           pg_catalog.array_remove(array[%8$s], null)
    from (
      select *%9$s
      from rows from (pg_catalog.unnest((select pg_catalog.array_agg(row(changed_row.*)::%1$s) from old_rows changed_row)),
                      pg_catalog.unnest((select pg_catalog.array_agg(row(changed_row.*)::%1$s) from new_rows changed_row))) as pair(%10$s)
      -- Computes each comparison once instead of once per use.
      offset 0
    ) pair
    where %11$s;
  else
    insert into jetfn.audit_log
      (txid, function, invocation_id, attempt, schema_name, table_name, operation, pk, old_row, new_row, changed_columns)
    select xact, stamp_function, stamp_invocation, stamp_attempt::pg_catalog.int4, TG_TABLE_SCHEMA, TG_TABLE_NAME, 'UPDATE',
           (select pg_catalog.jsonb_object_agg(k.k, pair.after_row operator(pg_catalog.->) k.k)
            from pg_catalog.unnest(%12$L::pg_catalog.text[]) k)::pg_catalog.json,
           diff.old_values::pg_catalog.json, diff.new_values::pg_catalog.json, diff.changed
    from rows from (
      pg_catalog.unnest((select pg_catalog.array_agg(pg_catalog.to_jsonb(changed_row.*)) from old_rows changed_row)),
      pg_catalog.unnest((select pg_catalog.array_agg(pg_catalog.to_jsonb(changed_row.*)) from new_rows changed_row))
    ) as pair(before_row, after_row)
    cross join lateral (
      select pg_catalog.array_agg(e.key order by e.key collate pg_catalog."C") as changed,
             pg_catalog.jsonb_object_agg(e.key, pair.before_row operator(pg_catalog.->) e.key) as old_values,
             pg_catalog.jsonb_object_agg(e.key, e.value) as new_values
      from pg_catalog.jsonb_each(pair.after_row) e
      -- Text forms, like the generated comparisons: 1.0 -> 1.00 is a change.
      where ((pair.before_row operator(pg_catalog.->) e.key)::pg_catalog.text is null
             and e.value::pg_catalog.text is not null)
         or not ((pair.before_row operator(pg_catalog.->) e.key)::pg_catalog.text operator(pg_catalog.=) e.value::pg_catalog.text)
    ) diff
    where diff.changed is not null;
  end if;
  return null;
end
$source$,
    table_type, jetfn.audit_function_head(), jetfn.audit_function_stamp(), columns, pk,
    array_to_string(old_json, ', '), array_to_string(new_json, ', '), array_to_string(changed, ', '),
    differs, aliases, array_to_string(any_differs, ' or '), key_columns);
end
$$;

-- Attaches (or refreshes, when the table's key or columns changed) the audit triggers of one table:
-- INSERT, UPDATE and DELETE through the table's generated functions, TRUNCATE through
-- jetfn.capture_changes. Returns whether anything changed.
create or replace function jetfn.attach_audit(target regclass) returns boolean
language plpgsql security definer set search_path = pg_catalog, jetfn as $$
declare
  key_columns text[] := jetfn.primary_key_columns(target);
  arguments text := (select coalesce(string_agg(quote_literal(c), ', '), '') from unnest(key_columns) c);
  wanted text[] := array[
    jetfn.audit_function_name(target, 'INSERT'), jetfn.audit_row_function_source(target, 'INSERT'),
    jetfn.audit_function_name(target, 'UPDATE'), jetfn.audit_update_function_source(target),
    jetfn.audit_function_name(target, 'DELETE'), jetfn.audit_row_function_source(target, 'DELETE')];
  current_functions text[];
  truncate_trigger text;
begin
  select array_agg(x order by t.tgname, x.ord) into current_functions
  from pg_trigger t
  join pg_proc p on p.oid = t.tgfoid and p.pronamespace = 'jetfn'::regnamespace
  cross join lateral unnest(array[p.proname::text, p.prosrc]) with ordinality as x(x, ord)
  where t.tgrelid = target and t.tgname in ('jetfn_audit_insert', 'jetfn_audit_update', 'jetfn_audit_delete');
  select pg_get_triggerdef(t.oid) into truncate_trigger
  from pg_trigger t where t.tgrelid = target and t.tgname = 'jetfn_audit_truncate';
  -- Triggers sort by name: delete, insert, update.
  if current_functions = array[wanted[5], wanted[6], wanted[1], wanted[2], wanted[3], wanted[4]]
     and truncate_trigger like '%capture_changes(' || arguments || ')' then
    return false;
  end if;
  for i in 0 .. 2 loop
    execute format('create or replace function jetfn.%I() returns trigger language plpgsql security definer as %L',
                   wanted[2 * i + 1], wanted[2 * i + 2]);
  end loop;
  execute format('drop trigger if exists jetfn_audit_insert on %s', target);
  execute format('drop trigger if exists jetfn_audit_update on %s', target);
  execute format('drop trigger if exists jetfn_audit_delete on %s', target);
  execute format('drop trigger if exists jetfn_audit_truncate on %s', target);
  execute format('create trigger jetfn_audit_insert after insert on %s referencing new table as new_rows
                  for each statement execute function jetfn.%I()', target, wanted[1]);
  execute format('create trigger jetfn_audit_update after update on %s referencing old table as old_rows new table as new_rows
                  for each statement execute function jetfn.%I()', target, wanted[3]);
  execute format('create trigger jetfn_audit_delete after delete on %s referencing old table as old_rows
                  for each statement execute function jetfn.%I()', target, wanted[5]);
  execute format('create trigger jetfn_audit_truncate after truncate on %s
                  for each statement execute function jetfn.capture_changes(%s)', target, arguments);
  return true;
end
$$;

-- Generated capture functions whose table is gone.
create or replace function jetfn.drop_orphaned_audit_functions() returns integer
language plpgsql security definer set search_path = pg_catalog, jetfn as $$
declare
  orphan record;
  dropped integer := 0;
begin
  for orphan in
    select p.proname from pg_proc p
    where p.pronamespace = 'jetfn'::regnamespace and p.proname ~ '^capture_(insert|update|delete)_[0-9]+$'
      and not exists (select 1 from pg_trigger t where t.tgfoid = p.oid)
  loop
    execute format('drop function jetfn.%I()', orphan.proname);
    dropped := dropped + 1;
  end loop;
  return dropped;
end
$$;

-- Every table audited so far moves to its generated functions.
select jetfn.attach_audit(t.tgrelid::regclass)
from pg_trigger t where t.tgname = 'jetfn_audit_insert';

-- As in 0002, and a renamed column counts too: Postgres reports RENAME COLUMN as a change of a
-- `table column`, which 0002 let pass, so a generated capture stayed stale until the next start.
create or replace function jetfn.attach_audit_on_ddl() returns event_trigger
language plpgsql as $$
declare
  command record;
begin
  for command in select * from pg_event_trigger_ddl_commands()
    where object_type in ('table', 'table column') and schema_name in (select s.schema_name from jetfn.audited_schemas s)
  loop
    if exists (select 1 from pg_class c where c.oid = command.objid and c.relkind in ('r', 'p') and not c.relispartition) then
      perform jetfn.attach_audit(command.objid::regclass);
    end if;
  end loop;
end
$$;
