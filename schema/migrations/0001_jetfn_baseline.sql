-- jetfn's schema, in one migration: every object once, in its final form. jetfn's own tables live
-- in schema jetfn; the app's tables stay in public (or the configured schemas). Later migrations
-- continue at 0023. (This file replaced migrations 0001-0022 before any release and makes the same
-- schema; runtime/db/migration-baseline.ts records it as applied, without running it, on a
-- database that had applied all of them. docs/database.md says what to do with other databases.)
--
-- Contents:
--   1. Invocations and dead letters
--   2. The outbox and its rules
--   3. Audit capture
--   4. Audit seals and anchors (and the lookup the sealer fills)
--   5. Checks before an invocation's COMMIT
create schema if not exists jetfn;


-- 1. Invocations and dead letters ---------------------------------------------------------------

-- One row per job invocation (the job's handle). Written in the same transaction as the
-- handler's writes on success, and on its own after a failed attempt.
--
-- A job cancelled before it finished ends `cancelled` (its reason in `error`, code E_CANCELLED).
-- That status is final like succeeded, dead and dropped: an attempt still running when the record
-- says cancelled is fenced out at its completion (JF001) and rolls back, so a cancel that races a
-- finishing attempt has exactly one winner.
--
-- Dead letters: a dead job retried by id keeps its row and records the new job that replaced it
-- (retried_as, retried_at); a dropped job (status 'dropped') records when it was discarded.
create table jetfn.invocations (
  id            text primary key,
  function      text not null,
  status        text not null check (status in ('queued', 'running', 'succeeded', 'failed', 'dead', 'dropped', 'cancelled')),
  attempts      integer not null default 0,
  input         jsonb,
  result        jsonb,
  error         jsonb,
  errors        jsonb not null default '[]'::jsonb,
  progress      jsonb,
  enqueued_at   timestamptz,
  started_at    timestamptz,
  finished_at   timestamptz,
  updated_at    timestamptz not null default clock_timestamp(),
  stream_seq    bigint,
  retry_of      text,
  retried_as    text,
  retried_at    timestamptz,
  dropped_at    timestamptz
);

-- The dead-letter queue lists dead jobs not yet retried, by function, newest first.
create index invocations_dead_idx on jetfn.invocations (function, finished_at desc)
  where status = 'dead' and retried_as is null;
-- Retention prunes by age; rows arrive roughly in time order, so a BRIN index is enough.
create index invocations_finished_brin on jetfn.invocations using brin (finished_at);

-- Appends `item` to a jsonb array, keeping only the newest `keep` entries.
create function jetfn.append_bounded(items jsonb, item jsonb, keep integer) returns jsonb
language sql immutable as $$
  select coalesce(jsonb_agg(entry order by position), '[]'::jsonb)
  from (
    select entry, position
    from jsonb_array_elements(coalesce(items, '[]'::jsonb) || jsonb_build_array(item)) with ordinality as t(entry, position)
    order by position desc
    limit keep
  ) newest
$$;

-- Records a successful attempt. Called inside the handler's transaction, just before COMMIT.
-- Fencing: if another attempt already finished the job (or it was declared dead, dropped or
-- cancelled), this raises JF001 so the transaction rolls back and at most one attempt's writes
-- ever commit.
--
-- An invocation id belongs to the function whose record holds it: the record of one function is
-- never written by another. A job of function B reusing the id of a job of function A would
-- otherwise be recorded over A's record (or, once A had finished, be acknowledged as "already
-- finished by another attempt"), so B never ran and B's caller was answered with A's result. The
-- completion raises JF002 instead, which the runtime reports as E_ID_CONFLICT and ends the job with
-- (A's record is left as it was).
create function jetfn.complete_invocation(
  p_id text, p_function text, p_attempt integer, p_input jsonb, p_result jsonb,
  p_enqueued_at timestamptz, p_started_at timestamptz, p_stream_seq bigint, p_retry_of text
) returns void
language plpgsql as $$
begin
  insert into jetfn.invocations as i
    (id, function, status, attempts, input, result, enqueued_at, started_at, finished_at, updated_at, stream_seq, retry_of)
  values
    (p_id, p_function, 'succeeded', p_attempt, p_input, p_result, p_enqueued_at, p_started_at, clock_timestamp(), clock_timestamp(), p_stream_seq, p_retry_of)
  on conflict (id) do update set
    status = 'succeeded', attempts = greatest(i.attempts, excluded.attempts), result = excluded.result,
    started_at = excluded.started_at, finished_at = excluded.finished_at, updated_at = excluded.updated_at,
    progress = null
  where i.status not in ('succeeded', 'dead', 'dropped', 'cancelled') and i.function = excluded.function;
  if not found then
    if exists (select from jetfn.invocations where id = p_id and function <> p_function) then
      raise exception 'invocation id % already belongs to another function than %', p_id, p_function
        using errcode = 'JF002';
    end if;
    raise exception 'invocation % was already finished by another attempt', p_id using errcode = 'JF001';
  end if;
end
$$;

-- Records the successful attempts of the jobs sharing one transaction (group commit) in one
-- statement, sent just before the COMMIT, instead of one complete_invocation() call per job. Per
-- job, that call cost Postgres about a fifth of its CPU on an insert job: a statement parsed from
-- literals, a plpgsql call, and an upsert whose executor (and CHECK constraint) was set up anew.
--
-- Fenced like complete_invocation(): if any of the jobs was already finished by another attempt (or
-- is final), it raises JF001, or JF002 if an id belongs to another function, and the shared
-- transaction rolls back; each of its jobs then runs again alone, where complete_invocation()
-- settles which attempt counts. The same job twice in one group (ON CONFLICT cannot touch a row
-- twice) ends the same way.
--
-- p_records is a JSON array of objects shaped like the success batch's rows (invocation-store.ts).
create function jetfn.complete_invocations(p_records jsonb) returns void
language plpgsql as $$
declare
  recorded integer;
begin
  insert into jetfn.invocations as i
    (id, function, status, attempts, input, result, enqueued_at, started_at, finished_at, updated_at, stream_seq, retry_of)
  select r.id, r.function, 'succeeded', r.attempts, r.input, r.result, r.enqueued_at, r.started_at, r.finished_at,
         clock_timestamp(), r.stream_seq, r.retry_of
  from jsonb_to_recordset(p_records) as r(
    id text, function text, attempts integer, input jsonb, result jsonb,
    enqueued_at timestamptz, started_at timestamptz, finished_at timestamptz, stream_seq bigint, retry_of text)
  on conflict (id) do update set
    status = 'succeeded', attempts = greatest(i.attempts, excluded.attempts), result = excluded.result,
    started_at = excluded.started_at, finished_at = excluded.finished_at, updated_at = excluded.updated_at,
    progress = null
  where i.status not in ('succeeded', 'dead', 'dropped', 'cancelled') and i.function = excluded.function;
  get diagnostics recorded = row_count;
  if recorded < jsonb_array_length(p_records) then
    -- Either way the shared transaction rolls back and each job runs again alone, where
    -- complete_invocation() tells which job conflicts; the code says why, for the logs.
    if exists (
      select from jetfn.invocations i join jsonb_to_recordset(p_records) as r(id text, function text) on r.id = i.id
      where i.function <> r.function
    ) then
      raise exception 'an invocation id of this group already belongs to another function' using errcode = 'JF002';
    end if;
    raise exception '% of % invocations were already finished by another attempt',
      jsonb_array_length(p_records) - recorded, jsonb_array_length(p_records) using errcode = 'JF001';
  end if;
end
$$;


-- 2. The outbox and its rules -------------------------------------------------------------------

-- Transactional outbox: jobs and events written in a transaction, published to NATS once it commits.
-- Rows are written by invocations (ctx.enqueue / ctx.call / ctx.emit, together with the
-- invocation's record) and by apps (enqueueInTransaction / emitInTransaction). The relay in every
-- runtime publishes them with Nats-Msg-Id = id and deletes them.
--
-- The outbox carries only jetfn's own messages. Whoever may insert into jetfn.outbox (the runtime
-- role, so handler code too, and apps using enqueueInTransaction) would otherwise choose the
-- subject, headers and id the relay publishes with the runtime's NATS rights: a row for
-- '$JS.API.STREAM.PURGE.JETFN_JOBS' would purge the jobs stream, again every second, since the
-- refused row stayed. So:
--
-- * jetfn.outbox_row_problem() states the rules once: a job for a valid function name
--   (fn.job.<name>, id "<name>:<invocation id>" as jetfn's Nats-Msg-Id of a job, headers {} or
--   {"Jetfn-Id": <that invocation id>}, optionally with Jetfn-Not-Before) or an event for a valid
--   event name (fn.event.<name>, no headers, an id of printable ASCII); a body of at most 64 MiB,
--   the largest max_payload a NATS server accepts. The relay checks the same rules in
--   runtime/outbox-rules.ts (and the server's real max_payload) before publishing.
-- * A CHECK constraint refuses other rows at insert, for every role, superusers included.
-- * Rows the relay refuses anyway (the constraint dropped, a body over the server's max_payload, a
--   publish JetStream keeps refusing) move to jetfn.outbox_set_aside, where `jetfn outbox` lists,
--   releases or drops them.
--
-- Delayed jobs: ctx.enqueue(..., { delay }) and enqueueInTransaction(..., { delay }) write a job
-- row with a second header, Jetfn-Not-Before (the due time, epoch milliseconds as 1-15 digits); the
-- relay routes such a row to the delayed-jobs stream (runtime/job-delay.ts).
--
-- plpgsql with every operator and function qualified, instead of `set search_path`: the setting
-- made each call cost about 30 us (it runs on every insert); qualified names keep a caller's
-- search_path from swapping in operators of its own. Lengths are checked apart from the patterns:
-- a bounded repetition ({8,128}) made the regular expression about 10 us slower.
create function jetfn.outbox_row_problem(id text, subject text, headers jsonb, body text) returns text
language plpgsql immutable parallel safe as $$
declare
  invocation text;
begin
  if id is null or subject is null or headers is null or body is null then
    return 'id, subject, headers and body are required';
  end if;
  if pg_catalog.octet_length(body) operator(pg_catalog.>) 67108864 then
    return 'the body is larger than 64 MiB';
  end if;
  if (subject collate pg_catalog."C") operator(pg_catalog.~) '^fn\.job\.[a-z0-9_-]+(\.[a-z0-9_-]+)*$'
     and pg_catalog.char_length(subject) operator(pg_catalog.<=) 207 then
    -- "fn.job." is 7 characters: the function's name starts at 8, "<name>:" is length - 6 long.
    if not pg_catalog.starts_with(id, pg_catalog.substr(subject, 8) operator(pg_catalog.||) ':') then
      return 'a job''s id must be "<function name>:<invocation id>"';
    end if;
    invocation := pg_catalog.substr(id, pg_catalog.char_length(subject) operator(pg_catalog.-) 5);
    if (invocation collate pg_catalog."C") operator(pg_catalog.!~) '^[A-Za-z0-9_-]+$'
       or pg_catalog.char_length(invocation) not between 8 and 128 then
      return 'a job''s invocation id must be 8-128 letters, digits, "-" or "_"';
    end if;
    if headers operator(pg_catalog.<>) '{}'::pg_catalog.jsonb
       and headers operator(pg_catalog.<>) pg_catalog.jsonb_build_object('Jetfn-Id', invocation)
       and not (
         (headers operator(pg_catalog.-) 'Jetfn-Not-Before'::text)
           operator(pg_catalog.=) pg_catalog.jsonb_build_object('Jetfn-Id', invocation)
         and pg_catalog.jsonb_typeof(headers operator(pg_catalog.->) 'Jetfn-Not-Before')
           operator(pg_catalog.=) 'string'
         and ((headers operator(pg_catalog.->>) 'Jetfn-Not-Before') collate pg_catalog."C")
           operator(pg_catalog.~) '^[0-9]{1,15}$'
       ) then
      return 'a job''s headers are Jetfn-Id, equal to its invocation id, and optionally Jetfn-Not-Before, its due time in epoch milliseconds';
    end if;
    return null;
  end if;
  if (subject collate pg_catalog."C") operator(pg_catalog.~) '^fn\.event\.[a-z0-9_-]+(\.[a-z0-9_-]+)*$'
     and pg_catalog.char_length(subject) operator(pg_catalog.<=) 209 then
    if (id collate pg_catalog."C") operator(pg_catalog.!~) '^[!-~]+$' or pg_catalog.char_length(id) > 128 then
      return 'an event''s id must be 1-128 printable ASCII characters, no spaces';
    end if;
    if headers operator(pg_catalog.<>) '{}'::pg_catalog.jsonb then
      return 'an event has no headers';
    end if;
    return null;
  end if;
  return 'the subject must be fn.job.<function name> or fn.event.<event name>';
end
$$;

comment on function jetfn.outbox_row_problem(text, text, jsonb, text) is
  'Why an outbox row is not a message jetfn publishes (null when it is); see runtime/outbox-rules.ts.';

create table jetfn.outbox (
  position bigint generated always as identity primary key,
  id text not null unique,
  subject text not null,
  headers jsonb not null default '{}'::jsonb,
  body text not null,
  function text,
  invocation_id text,
  created_at timestamptz not null default clock_timestamp(),
  constraint outbox_row_is_a_jetfn_message check (jetfn.outbox_row_problem(id, subject, headers, body) is null)
);

comment on table jetfn.outbox is
  'Messages waiting to be published to NATS after their transaction committed (position = publish order; id = Nats-Msg-Id).';

-- Rows written outside any function are published by the relay's sweep; wake it up on commit.
-- (NOTIFY is delivered at commit and de-duplicated within a transaction, so a batch costs one.)
create function jetfn.notify_outbox() returns trigger
language plpgsql as $$
begin
  perform pg_notify('jetfn_outbox', '');
  return null;
end
$$;

create trigger jetfn_outbox_notify
  after insert on jetfn.outbox
  for each row when (new.invocation_id is null)
  execute function jetfn.notify_outbox();

create table jetfn.outbox_set_aside (
  -- The row's position in jetfn.outbox: ids may repeat here (set aside, released, set aside again).
  position bigint primary key,
  id text not null,
  subject text not null,
  headers jsonb not null,
  body text not null,
  function text,
  invocation_id text,
  created_at timestamptz not null,
  reason text not null,
  set_aside_at timestamptz not null default clock_timestamp()
);

create index outbox_set_aside_id on jetfn.outbox_set_aside (id);

comment on table jetfn.outbox_set_aside is
  'Outbox rows the relay refused to publish, with why; `jetfn outbox` lists, releases or drops them.';


-- 3. Audit capture ------------------------------------------------------------------------------

-- Audit trail: every row changed in an audited schema gets one row in jetfn.audit_log, written by
-- Postgres itself (statement-level triggers with transition tables), in the same transaction as
-- the change. The runtime stamps each invocation's transaction with set_config('jetfn.function'
-- | 'jetfn.invocation_id' | 'jetfn.attempt', ..., true); writes made outside any function are
-- recorded with those left empty.

create sequence jetfn.audit_log_id_seq as bigint;

-- Partitioned by month so old months can be dropped instead of deleted row by row.
--
-- The table is append-only and written only by the capture functions, so it has no primary key
-- and no CHECK on operation: the key's b-tree was the costliest index insert per audit row. id
-- comes from its sequence. Rows are found by the BRIN index over (txid, id, logged_at) below, and
-- sealed rows through jetfn.audit_lookup.
--
-- pk, old_row and new_row are json, not jsonb: json is stored as the text it was built as, far
-- cheaper to build than jsonb's parsed form. Queries that need jsonb operators cast.
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
  operation       text not null,
  pk              json,
  old_row         json,
  new_row         json,
  changed_columns text[]
) partition by range (logged_at);

alter sequence jetfn.audit_log_id_seq owned by jetfn.audit_log.id;

-- Catches rows for months whose partition does not exist yet, so a write never fails for it.
create table jetfn.audit_log_default partition of jetfn.audit_log default;

-- One block-range index answers the time, txid (sealing) and id range questions. Besides it, the
-- log has only the b-tree on txid the checks before COMMIT need (section 5): the lookups by
-- invocation, function and row live in jetfn.audit_lookup, off the write path (section 4), since
-- every index on the log costs every audited write an index insert. It summarizes each block range as soon as the
-- next one starts (autovacuum does it in the background, and the sealer through
-- jetfn.summarize_audit_ranges). A range only counts for lookups once summarized; until then every
-- query scans it, which is right, only slower. The range being filled stays unsummarized so writers
-- never widen a summary row by row.
create index audit_log_brin on jetfn.audit_log using brin (txid, id, logged_at) with (autosummarize = on);

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

-- Captures TRUNCATE for every audited table (INSERT, UPDATE and DELETE go through each table's
-- generated functions, below); it also captures the other operations, generically, for a trigger
-- that passes it the table's key columns in TG_ARGV.
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

-- Generated capture. Each audited table gets its own INSERT, UPDATE and DELETE capture functions,
-- generated from its columns and key by jetfn.attach_audit: set-wise over the transition table, no
-- per-row plpgsql, and UPDATE compares old and new values column by column in their own types and
-- builds only the changed columns' JSON. The generated functions carry no SET search_path (a SET
-- clause costs every call): every function, type, operator and collation they use is
-- schema-qualified (they run as the log's owner with the writer's search_path), and the writer's
-- stamp settings are read once per statement.

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

-- A value as JSON text: integers and booleans print as JSON already, anything else goes through
-- to_json.
create function jetfn.audit_json_expression(value text, column_type regtype) returns text
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

-- Name of a table's generated UPDATE capture function: the same as
-- jetfn.audit_function_name(target, 'UPDATE').
create function jetfn.audit_update_function_name(target regclass) returns text
language sql stable as $$
  select format('capture_update_%s', target::oid)
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

-- A column's value compared exactly as stored, with every name qualified. For types whose
-- equality could call two different values equal (case-insensitive collations, numeric scale,
-- floats' -0, types without `=`), the text forms are compared.
create function jetfn.audit_differs_expression(old_value text, new_value text, column_type regtype) returns text
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

-- Source of the generated UPDATE capture function of a table, writing json. Postgres appends each
-- updated row's old and new version to the two transition tables together, so rows pair up by
-- position (which also covers keyless tables and updates of the key itself): both are read into
-- arrays of the table's row type and zipped, cheaper than joining them, and compared column by
-- column in their own types. Columns are taken by position from the table's row type, so before
-- using its column list the function checks the first new row's column names, in order, against
-- it: a column added, dropped, renamed or moved since it was generated (and nothing refreshed it
-- yet) sends the statement down a generic, name-keyed diff instead of pairing values with the
-- wrong names.
create function jetfn.audit_update_function_source(target regclass) returns text
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
create function jetfn.attach_audit(target regclass) returns boolean
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
create function jetfn.drop_orphaned_audit_functions() returns integer
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

-- Attaches the audit triggers to every table of the audited schemas that lacks them, and refreshes
-- those whose generated function no longer matches the table (where no event trigger did it at
-- ALTER TABLE time). Returns the tables attached or refreshed.
create function jetfn.attach_audit_everywhere(schemas text[] default array['public']) returns integer
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

-- Schemas whose tables are audited; the event trigger and the runtime read it.
create table jetfn.audited_schemas (schema_name text primary key);
insert into jetfn.audited_schemas values ('public');

-- Tables of the audited schemas get their audit capture the moment their DDL ends, through an
-- event trigger (Postgres reports RENAME COLUMN as a change of a `table column`, so a renamed
-- column regenerates the capture too). Event triggers need a superuser; without one the runtime
-- attaches missing tables at start and on every deploy, and `jetfn migrate` after migrating.
--
-- * A table jetfn's owner cannot manage is handed to it first. The capture is attached by
--   jetfn.attach_audit, which runs as jetfn's owner; with the roles of schema/roles.sql that is
--   jetfn_owner, who may neither create nor drop triggers on a table a superuser created, so the
--   superuser's CREATE TABLE would fail ("permission denied for table ..."). So the table goes to
--   jetfn's owner, with the privileges that owner's default privileges give its own new
--   tables in that schema (and their sequences): a table a superuser creates ends up like one
--   jetfn_owner creates, captured, writable by the runtime, and not owned by the runtime (a
--   table's owner can disable its triggers). The same holds for a table later given to another
--   role (ALTER TABLE ... OWNER TO): it comes back to jetfn's owner.
-- * The function runs as whoever issued the DDL, anywhere in the database, often a superuser. So it
--   stays with a superuser (schema/roles.sql hands the rest of jetfn to jetfn_owner, but leaves
--   event trigger functions where they are: else jetfn_owner could rewrite code that superusers
--   run), reads only the catalogs and jetfn.audited_schemas (checked to be a plain table of text
--   under a lock: a view, or a type with casts of jetfn_owner's, would run their functions here),
--   and calls jetfn's code (jetfn.attach_audit, security definer) only for tables of the audited
--   schemas.
create function jetfn.attach_audit_after_ddl() returns event_trigger
language plpgsql set search_path = pg_catalog, pg_temp as $$
declare
  jetfn_owner oid := (select n.nspowner from pg_namespace n where n.nspname = 'jetfn');
  schemas text[];
  target record;
  grant_statement text;
begin
  lock table jetfn.audited_schemas in access share mode;
  if not exists (select from pg_class c join pg_attribute a on a.attrelid = c.oid
                 where c.oid = 'jetfn.audited_schemas'::regclass and c.relkind = 'r'
                   and a.attname = 'schema_name' and a.atttypid = 'text'::regtype and not a.attisdropped) then
    raise exception 'jetfn.audited_schemas is no longer a plain table of names; audit capture refused';
  end if;
  schemas := array(select s.schema_name from only jetfn.audited_schemas s);
  for target in
    select distinct c.oid, c.relnamespace, c.relowner
    from pg_event_trigger_ddl_commands() d join pg_class c on c.oid = d.objid
    where d.object_type in ('table', 'table column') and d.schema_name = any(schemas)
      and c.relkind in ('r', 'p') and not c.relispartition
  loop
    -- Creating and dropping a table's triggers takes the privileges of its owner.
    if not pg_has_role(jetfn_owner, target.relowner, 'USAGE') then
      begin
        execute format('alter table %s owner to %s', target.oid::regclass, jetfn_owner::regrole);
      exception when insufficient_privilege then
        raise exception 'table % is in an audited schema, so it must belong to jetfn''s owner %',
          target.oid::regclass, jetfn_owner::regrole
          using hint = format('Create it as %s, or as a superuser.', jetfn_owner::regrole),
                errcode = 'insufficient_privilege';
      end;
      -- Its serial and identity sequences moved with it; they get the defaults for sequences.
      for grant_statement in
        select format('grant %s on %s %s to %s%s', a.privilege_type, object.kind, object.oid::regclass,
                      case a.grantee when 0 then 'public' else a.grantee::regrole::text end,
                      case when a.is_grantable then ' with grant option' else '' end)
        from pg_default_acl d
        cross join lateral aclexplode(d.defaclacl) a
        cross join lateral (
          select 'table', target.oid where d.defaclobjtype = 'r'
          union all
          select 'sequence', dep.objid from pg_depend dep join pg_class s on s.oid = dep.objid
          where d.defaclobjtype = 'S' and dep.classid = 'pg_class'::regclass and dep.refobjid = target.oid
            and dep.deptype in ('a', 'i') and s.relkind = 'S'
        ) object(kind, oid)
        where d.defaclrole = jetfn_owner and d.defaclnamespace in (0, target.relnamespace)
          and d.defaclobjtype in ('r', 'S') and a.grantee <> jetfn_owner
      loop
        execute grant_statement;
      end loop;
    end if;
    perform jetfn.attach_audit(target.oid::regclass);
  end loop;
end
$$;

-- Creating the event trigger needs a superuser; without one, schema/roles.sql (run as a superuser)
-- creates it.
do $$
begin
  if (select rolsuper from pg_roles where rolname = current_user) then
    create event trigger jetfn_audit_new_tables on ddl_command_end
      when tag in ('CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO', 'ALTER TABLE')
      execute function jetfn.attach_audit_after_ddl();
  end if;
end
$$;

-- Tables that exist already.
select jetfn.attach_audit_everywhere(array(select schema_name from jetfn.audited_schemas));


-- 4. Audit seals and anchors --------------------------------------------------------------------

-- Tamper evidence: committed audit rows are sealed, in the background and in batches, into a hash
-- chain. Writers never wait for it: a seal only covers rows whose transaction ended before the
-- oldest transaction still running began (txid below the snapshot's xmin), so no row can later
-- join a range that is already sealed, even one with a lower id that commits late. Seals walk the
-- log in (txid, id) order, through the BRIN index.
--
-- Each seal records the format of the row text its hash was built with. Format 1
-- (jetfn.audit_row_text) joins a row's fields with concat_ws('|', ...), which skips NULLs, so two
-- different rows can give the same text: a row with function, invocation id and attempt set, and
-- one with those NULL and their values moved into db_user ('f|inv|1|jetfn_runtime'), hash alike.
-- Format 2 (jetfn.audit_row_text_v2) is the row's fields as a Postgres record literal
-- (ROW(...)::text, record_out): a NULL is an empty field, and a value is double-quoted, with '"'
-- and '\' doubled, whenever it is empty or holds a comma, quote, backslash, parenthesis or white
-- space. So an empty string ("") differs from NULL, and no value can spill into its neighbour: the
-- text reads back into exactly one row. (Length-prefixing every field was also unambiguous, but
-- hashing 100,000 rows took 1.5-1.9 times as long as format 1; the record literal, built in C,
-- takes about 1.2 times.) New seals use format 2; seals of format 1, made by earlier development
-- versions of jetfn, still verify.
create table jetfn.audit_seals (
  seq           bigint primary key,
  sealed_at     timestamptz not null default clock_timestamp(),
  -- Covers rows with (txid, id) > (after_txid, after_id) and <= (last_txid, last_id).
  after_txid    bigint not null,
  after_id      bigint not null,
  last_txid     bigint not null,
  last_id       bigint not null,
  row_count     integer not null,
  first_logged_at timestamptz not null,
  last_logged_at  timestamptz not null,
  previous_hash text not null,
  hash          text not null,
  format        smallint not null check (format in (1, 2))
);

-- Where the chain starts again after old seals were pruned with their rows.
create table jetfn.audit_anchors (
  seq           bigint primary key,
  anchored_at   timestamptz not null default clock_timestamp(),
  -- The hash the first remaining seal must chain from.
  hash          text not null,
  reason        text not null
);

-- The canonical text of one audit row in format 1, as hashed (independent of the session's time
-- zone). Declared stable, not immutable (concat_ws() and extract() from a timestamptz are only
-- stable), so that Postgres inlines it into the hash's string_agg instead of calling it as a
-- separate SQL function for every row: sealing 100,000 rows took 690 ms instead of 1,050 ms.
create function jetfn.audit_row_text(r jetfn.audit_log) returns text
language sql stable as $$
  select concat_ws('|', r.id, (extract(epoch from r.logged_at) * 1000000)::bigint, r.txid, r.function,
                   r.invocation_id, r.attempt, r.db_user, r.schema_name, r.table_name, r.operation,
                   r.pk::text, r.old_row::text, r.new_row::text, r.changed_columns::text)
$$;

-- The canonical text of one audit row in format 2 (independent of the session's time zone; stable,
-- not immutable, so that it is inlined into the hash's string_agg).
create function jetfn.audit_row_text_v2(r jetfn.audit_log) returns text
language sql stable as $$
  select row(r.id, (extract(epoch from r.logged_at) * 1000000)::bigint, r.txid, r.function,
             r.invocation_id, r.attempt, r.db_user, r.schema_name, r.table_name, r.operation,
             r.pk::text, r.old_row::text, r.new_row::text, r.changed_columns)::text
$$;

-- The hash a seal of format 1 gets: its predecessor's hash followed by its rows, in (txid, id) order.
create function jetfn.audit_range_hash(previous_hash text, after_txid bigint, after_id bigint, last_txid bigint, last_id bigint)
returns table (hash text, row_count integer)
language sql stable as $$
  select encode(sha256(convert_to(previous_hash || coalesce(string_agg(jetfn.audit_row_text(l), E'\n' order by l.txid, l.id), ''), 'UTF8')), 'hex'),
         count(*)::integer
  from jetfn.audit_log l
  where l.txid >= after_txid and l.txid <= last_txid
    and (l.txid, l.id) > (after_txid, after_id) and (l.txid, l.id) <= (last_txid, last_id)
$$;

-- As jetfn.audit_range_hash, with the format-2 row text.
create function jetfn.audit_range_hash_v2(previous_hash text, after_txid bigint, after_id bigint, last_txid bigint, last_id bigint)
returns table (hash text, row_count integer)
language sql stable as $$
  select encode(sha256(convert_to(previous_hash || coalesce(string_agg(jetfn.audit_row_text_v2(l), E'\n' order by l.txid, l.id), ''), 'UTF8')), 'hex'),
         count(*)::integer
  from jetfn.audit_log l
  where l.txid >= after_txid and l.txid <= last_txid
    and (l.txid, l.id) > (after_txid, after_id) and (l.txid, l.id) <= (last_txid, last_id)
$$;

-- Lookup indexes off the write path. Indexes on the log itself (a hash index on pk, partial
-- indexes on invocation_id and function) would cost every audited write an index insert each.
-- They live on jetfn.audit_lookup instead, filled by the sealer as it seals: a sealed row is
-- indexed in the same transaction as its seal. Queries read the lookup for sealed rows and scan
-- the unsealed tail (jetfn.audit_tail: rows after the last seal, found through the BRIN index),
-- which sealing keeps to a few seconds of writes. Sealed rows are fetched from the log by
-- (txid, id) through the BRIN index, so the lookup keeps the txid. Newest-first listings read the
-- b-tree on id, and the one on (function, id) for --function.
create table jetfn.audit_lookup (
  id            bigint not null,
  logged_at     timestamptz not null,
  function      text,
  invocation_id text,
  schema_name   text not null,
  table_name    text not null,
  -- jsonb, unlike the log's: its hash index needs it.
  pk            jsonb,
  txid          bigint
);

-- Newest first: all changes, and those of one function.
create index audit_lookup_id_idx on jetfn.audit_lookup (id);
create index audit_lookup_function_idx on jetfn.audit_lookup (function, id) where function is not null;
-- What one invocation changed.
create index audit_lookup_invocation_idx on jetfn.audit_lookup (invocation_id) where invocation_id is not null;
-- What happened to one row. Hash: equality is all a row lookup needs, and hashing a jsonb key is
-- cheaper than ordering it.
create index audit_lookup_row_idx on jetfn.audit_lookup using hash (pk);
-- Pruning deletes by time.
create index audit_lookup_time_brin on jetfn.audit_lookup using brin (logged_at);

-- Seals up to `max_rows` settled rows, in format 2, and puts them into the lookup with their seal;
-- returns how many. One sealer at a time (advisory lock); a second caller returns 0 at once
-- instead of waiting.
--
-- Seals are bounded in bytes as well as rows. A seal hashes its rows' text as one string, and a
-- value cannot exceed 1 GB: 10,000 rows of 100 KB of JSON would make a batch that could never be
-- sealed, and the sealer's growing batches (up to 100,000 rows) make big rows more likely to hit
-- it. A batch ends at the row that takes it past `max_bytes` of stored row data (64 MB; stored
-- JSON may be compressed, a few times smaller than its text).
create function jetfn.seal_audit(max_rows integer default 10000, max_bytes bigint default 67108864) returns integer
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
    select l.txid, l.id, coalesce(sum(l.size) over (order by l.txid, l.id rows between unbounded preceding and 1 preceding), 0) as before
    from (
      select l.txid, l.id, coalesce(pg_column_size(l.old_row), 0) + coalesce(pg_column_size(l.new_row), 0) + 256 as size
      from jetfn.audit_log l
      where l.txid >= previous.last_txid and l.txid < horizon
        and (l.txid, l.id) > (previous.last_txid, previous.last_id)
      order by l.txid, l.id
      limit max_rows
    ) l
  ) l
  -- Up to the row that crosses the byte budget (so at least one row, however big).
  where l.before < max_bytes
  order by l.txid desc, l.id desc
  limit 1;
  if last_row.txid is null then
    return 0;
  end if;
  select * into sealed from jetfn.audit_range_hash_v2(previous.hash, previous.last_txid, previous.last_id, last_row.txid, last_row.id);
  insert into jetfn.audit_seals
    (seq, after_txid, after_id, last_txid, last_id, row_count, first_logged_at, last_logged_at, previous_hash, hash, format)
  select previous.seq + 1, previous.last_txid, previous.last_id, last_row.txid, last_row.id, sealed.row_count,
         min(l.logged_at), max(l.logged_at), previous.hash, sealed.hash, 2
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

-- Rows not sealed yet and the age of the oldest: how far sealing lags.
create function jetfn.audit_seal_lag(out unsealed_rows bigint, out oldest_unsealed timestamptz)
language sql stable security definer set search_path = pg_catalog, jetfn as $$
  with head as (select coalesce(max(last_txid), 0) as txid, coalesce(max(last_id), 0) as id
                from jetfn.audit_seals where seq = (select max(seq) from jetfn.audit_seals))
  select count(*), min(l.logged_at)
  from jetfn.audit_log l, head
  where l.txid >= head.txid and (l.txid, l.id) > (head.txid, head.id)
$$;

-- Where sealing (and so the lookup) has got to: rows with (txid, id) above it are the unsealed tail.
create function jetfn.audit_sealed_through(out txid bigint, out id bigint)
language sql stable as $$
  select coalesce(max(s.last_txid), 0), coalesce(max(s.last_id), 0)
  from jetfn.audit_seals s where s.seq = (select max(seq) from jetfn.audit_seals)
$$;

-- Checks every seal against the rows it covers and against its predecessor, recomputing each seal
-- in its own format. Returns nothing when the chain is intact, else the first broken seal and what
-- is wrong with it. This checks the chain against itself only: whoever can rewrite the rows can
-- rewrite the seals too; `jetfn audit verify` also checks the seals against their anchors in NATS
-- (stream JETFN_AUDIT_ANCHORS), which the database cannot reach.
create function jetfn.verify_audit()
returns table (seq bigint, problem text, expected_rows integer, found_rows integer, expected_hash text, found_hash text)
language plpgsql stable security definer set search_path = pg_catalog, jetfn as $$
declare
  seal jetfn.audit_seals;
  expected_previous text;
  recomputed record;
begin
  select a.hash into expected_previous from jetfn.audit_anchors a order by a.seq desc limit 1;
  expected_previous := coalesce(expected_previous, 'genesis');
  for seal in select * from jetfn.audit_seals s order by s.seq loop
    if seal.previous_hash <> expected_previous then
      return query select seal.seq, 'the seal does not chain from the previous one (a seal was altered or removed)',
                          seal.row_count, null::integer, expected_previous, seal.previous_hash;
      return;
    end if;
    -- Each format's hash is called directly: behind a wrapper of its own, the range query got a
    -- generic plan that read the whole log for every seal.
    if seal.format = 1 then
      select * into recomputed from jetfn.audit_range_hash(seal.previous_hash, seal.after_txid, seal.after_id, seal.last_txid, seal.last_id);
    else
      select * into recomputed from jetfn.audit_range_hash_v2(seal.previous_hash, seal.after_txid, seal.after_id, seal.last_txid, seal.last_id);
    end if;
    if recomputed.hash <> seal.hash then
      return query select seal.seq,
        case when recomputed.row_count < seal.row_count then 'audit rows were deleted'
             when recomputed.row_count > seal.row_count then 'audit rows were added'
             else 'audit rows were altered' end,
        seal.row_count, recomputed.row_count, seal.hash, recomputed.hash;
      return;
    end if;
    expected_previous := seal.hash;
  end loop;
end
$$;

-- Drops whole monthly partitions older than `keep`, when every row in them is sealed and no seal
-- reaches across the boundary; their seals and lookup entries go too, and an anchor records where
-- the chain resumes. Returns the partitions dropped.
create function jetfn.prune_audit(keep interval) returns setof text
language plpgsql security definer set search_path = pg_catalog, jetfn as $$
declare
  part record;
  boundary timestamptz;
  last_pruned jetfn.audit_seals;
begin
  for part in
    select c.relname::text as name,
           (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \(''([^'']+)''\)'))[1]::timestamptz as upper_bound
    from pg_inherits i
    join pg_class c on c.oid = i.inhrelid
    where i.inhparent = 'jetfn.audit_log'::regclass and c.relname <> 'audit_log_default'
    order by 2
  loop
    boundary := part.upper_bound;
    exit when boundary is null or boundary > now() - keep;
    -- Every row before the boundary must be sealed, and no seal may straddle it.
    exit when exists (select 1 from jetfn.audit_seals s where s.first_logged_at < boundary and s.last_logged_at >= boundary);
    exit when (select oldest_unsealed from jetfn.audit_seal_lag()) < boundary;
    select * into last_pruned from jetfn.audit_seals s where s.last_logged_at < boundary order by s.seq desc limit 1;
    if last_pruned.seq is not null then
      insert into jetfn.audit_anchors (seq, hash, reason)
      values (last_pruned.seq, last_pruned.hash, format('pruned %s (rows before %s)', part.name, boundary))
      on conflict (seq) do nothing;
      delete from jetfn.audit_seals s where s.seq <= last_pruned.seq;
    end if;
    delete from jetfn.audit_lookup k where k.logged_at < boundary;
    execute format('drop table jetfn.%I', part.name);
    return next part.name;
  end loop;
end
$$;

-- Rows after the last seal. A condition on txid whose bound comes from a subquery made the planner
-- guess a third of the log and scan all of it; the SET keeps this on the BRIN index whatever the
-- planner guesses (the clause also keeps the function from being inlined, so it is planned on its
-- own).
create function jetfn.audit_tail_rows() returns setof jetfn.audit_log
language sql stable set enable_seqscan = off as $$
  select l.* from jetfn.audit_log l
  where l.txid >= (select txid from jetfn.audit_sealed_through())
    and (l.txid, l.id) > (select txid, id from jetfn.audit_sealed_through())
$$;

create view jetfn.audit_tail as select * from jetfn.audit_tail_rows();

-- Summarizes the BRIN block ranges of the log that are full and not summarized yet; returns how
-- many. The sealer calls it after each round: the tail and sealed rows are found through these
-- summaries, and autovacuum (autosummarize) gets to them only on its next run, a minute or more
-- later, while an unsummarized range is read whole by every query. The range being filled is left
-- alone, so writers never widen a summary row by row. A partition that has no statistics yet (a new
-- month) is analyzed once: without them the planner prices the BRIN index as useless and scans the
-- whole partition (autovacuum keeps them up to date from then on). A partition busy with
-- (auto)vacuum is skipped this round rather than waited for.
create function jetfn.summarize_audit_ranges() returns integer
language plpgsql security definer set search_path = pg_catalog, jetfn set lock_timeout = '100ms' as $$
declare
  part record;
  block bigint;
  total integer := 0;
  summarized integer;
  found_ranges integer;
begin
  for part in
    select i.indexrelid::regclass as index, h.inhrelid::regclass as heap, c.relname as heap_name,
           coalesce((select o.option_value::integer from pg_options_to_table(ic.reloptions) o
                     where o.option_name = 'pages_per_range'), 128) as pages_per_range
    from pg_inherits h
    join pg_class c on c.oid = h.inhrelid
    join pg_index i on i.indrelid = h.inhrelid
    join pg_class ic on ic.oid = i.indexrelid
    join pg_am a on a.oid = ic.relam and a.amname = 'brin'
    where h.inhparent = 'jetfn.audit_log'::regclass
  loop
    -- From the last full range back to the first one already summarized.
    block := (pg_relation_size(part.heap) / current_setting('block_size')::bigint / part.pages_per_range - 1)
             * part.pages_per_range;
    found_ranges := 0;
    begin
      while block >= 0 loop
        summarized := brin_summarize_range(part.index, block);
        exit when summarized = 0;
        found_ranges := found_ranges + summarized;
        block := block - part.pages_per_range;
      end loop;
      if found_ranges > 0 and not exists (
        select 1 from pg_stats s where s.schemaname = 'jetfn' and s.tablename = part.heap_name
      ) then
        execute format('analyze %s', part.heap);
      end if;
    exception when lock_not_available then
      null;
    end;
    total := total + found_ranges;
  end loop;
  return total;
end
$$;


-- 5. Checks before an invocation's COMMIT -------------------------------------------------------

-- Checks the runtime makes just before it commits a transaction a handler's statements ran in.
--
-- The audit capture reads its stamp (function, invocation id, attempt) from transaction-local
-- settings, which any statement of the transaction may set: a handler could make its writes
-- appear as another function's or another invocation's, or as an outside write (an empty stamp).
-- The statement guard refuses such statements when it can read them; code it cannot read (a
-- function already in the database that calls set_config) is caught here: before COMMIT, every
-- audit row of the transaction must name an invocation the transaction completes, under that
-- invocation's function and attempt. Otherwise the check raises JF003, the transaction rolls back
-- and the attempt fails (E_STATEMENT_REFUSED).
--
-- The same check notices a transaction that is no longer the one the runtime opened (a handler's
-- ROLLBACK or COMMIT slipped past the guard, and its statements now run in a transaction of their
-- own): the stamp the runtime set with SET LOCAL is then gone.

-- Finding a transaction's audit rows needs an index on txid (the BRIN index reads whole ranges).
create index audit_log_txid_idx on jetfn.audit_log (txid);

-- One invocation's own transaction (a call, or a job run alone).
create function jetfn.verify_invocation(p_function text, p_invocation text, p_attempt integer) returns void
language plpgsql set search_path = pg_catalog, jetfn as $$
declare
  xact bigint := pg_current_xact_id_if_assigned()::text::bigint;
  stranger record;
begin
  if current_setting('jetfn.invocation_id', true) is distinct from p_invocation
     or current_setting('jetfn.function', true) is distinct from p_function
     or current_setting('jetfn.attempt', true) is distinct from p_attempt::text then
    raise exception 'invocation % of % is no longer in the transaction the runtime opened for it, or its audit stamp was changed',
      p_invocation, p_function using errcode = 'JF003';
  end if;
  if xact is null then
    return;
  end if;
  select l.function, l.invocation_id, l.attempt into stranger from jetfn.audit_log l
  where l.txid = xact
    and (l.function is distinct from p_function or l.invocation_id is distinct from p_invocation
         or l.attempt is distinct from p_attempt)
  limit 1;
  if found then
    raise exception 'invocation % of % wrote audit rows stamped as %/%/% (function/invocation/attempt)',
      p_invocation, p_function, coalesce(stranger.function, 'none'), coalesce(stranger.invocation_id, 'none'),
      coalesce(stranger.attempt::text, 'none') using errcode = 'JF003';
  end if;
end
$$;

-- A transaction shared by several jobs (group commit): p_members is a JSON array of
-- {"function", "invocation", "attempt", "after"} objects, one per job whose writes it keeps. Each
-- job's audit rows must carry its own stamp: a job whose statements call a database function that
-- sets the stamp (the statement guard cannot read inside it) could otherwise stamp its rows as
-- another job of the same transaction, and they would commit as that job's.
--
-- The runtime reads the audit log's sequence as each job's part of the transaction begins (in the
-- same message as its SET LOCAL stamp, see runtime/db/commit-groups.ts) and passes the value as
-- the member's "after": the audit rows a job wrote are those of the transaction with an id above
-- its mark and up to the next member's. The mark lives in the runtime's memory, where nothing a
-- statement runs can change it; ids come from one sequence (CACHE 1), so they grow in the order
-- rows are written. A member without a mark is held only to the weaker check (its rows name it).
create function jetfn.verify_group(p_members jsonb) returns void
language plpgsql set search_path = pg_catalog, jetfn as $$
declare
  xact bigint := pg_current_xact_id_if_assigned()::text::bigint;
  stranger record;
begin
  if coalesce(current_setting('jetfn.invocation_id', true), '') = '' then
    raise exception 'the shared transaction is no longer the one the runtime opened' using errcode = 'JF003';
  end if;
  if xact is null then
    return;
  end if;
  with member as (
    select m.function, m.invocation, m.attempt, m.after,
           lead(m.after) over (order by m.after) as until
    from jsonb_to_recordset(p_members) as m(function text, invocation text, attempt integer, after bigint)
  )
  select l.function, l.invocation_id, l.attempt into stranger from jetfn.audit_log l
  where l.txid = xact
    and not exists (
      select from member m
      where m.function = l.function and m.invocation = l.invocation_id and m.attempt = l.attempt
        and l.id > m.after and (m.until is null or l.id <= m.until))
  limit 1;
  if found then
    raise exception 'a shared transaction holds an audit row stamped as %/%/% (function/invocation/attempt) that was not written in that job''s part of it',
      coalesce(stranger.function, 'none'), coalesce(stranger.invocation_id, 'none'),
      coalesce(stranger.attempt::text, 'none') using errcode = 'JF003';
  end if;
end
$$;

-- The runtime reads the sequence (SELECT allows reading it, not advancing or setting it). Where
-- the role does not exist yet, schema/roles.sql grants it.
do $$
begin
  if exists (select from pg_catalog.pg_roles where rolname = 'jetfn_runtime') then
    grant select on sequence jetfn.audit_log_id_seq to jetfn_runtime;
  end if;
end
$$;
