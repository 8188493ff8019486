-- Database roles for production. Run once per database as a superuser, after the first
-- `jetfn migrate` (also run as a superuser, which installs the event trigger that captures new
-- tables):
--   psql "$ADMIN_URL" -f schema/roles.sql
-- then set passwords (ALTER ROLE ... PASSWORD ...) and connect:
--   jetfn migrate  as jetfn_owner   (owns jetfn's tables and the app's tables, runs migrations)
--   jetfn start    as jetfn_runtime (reads and writes app rows; cannot touch the audit log,
--                                    alter tables, or disable the triggers that feed it)
-- A table's owner can disable its triggers, so the runtime must not own the audited tables.
-- The audit triggers and jetfn's maintenance functions run as jetfn_owner (security definer).
-- Re-running this file is safe. Run it again after upgrading jetfn: new jetfn tables need the
-- runtime's grants, and only a superuser can change the event trigger.

do $$
begin
  if not exists (select from pg_roles where rolname = 'jetfn_owner') then
    create role jetfn_owner login;
  end if;
  if not exists (select from pg_roles where rolname = 'jetfn_runtime') then
    create role jetfn_runtime login;
  end if;
exception when duplicate_object or unique_violation then
  null; -- created concurrently by another session (roles belong to the whole cluster)
end
$$;

-- Hand jetfn's objects and the app's tables to the owner.
do $$
declare
  item record;
  -- Read before the loop: a table cannot change owner while a query in this session reads it.
  schemas text[] := array(select schema_name from jetfn.audited_schemas) || array['jetfn'];
begin
  execute format('alter schema jetfn owner to jetfn_owner');
  for item in
    select format('%I.%I', n.nspname, c.relname) as name, c.relkind
    from pg_class c join pg_namespace n on n.oid = c.relnamespace
    where n.nspname = any(schemas)
      and c.relkind in ('r', 'p', 'S', 'v', 'm')
      -- Sequences of serial and identity columns follow their table.
      and not (c.relkind = 'S' and exists (
        select 1 from pg_depend d
        where d.classid = 'pg_class'::regclass and d.objid = c.oid and d.deptype in ('a', 'i')))
  loop
    execute format('alter %s %s owner to jetfn_owner',
      case item.relkind when 'S' then 'sequence' when 'v' then 'view' when 'm' then 'materialized view' else 'table' end,
      item.name);
  end loop;
  for item in
    select p.oid::regprocedure::text as signature
    from pg_proc p join pg_namespace n on n.oid = p.pronamespace
    -- Event trigger functions run as whoever issues DDL, superusers included: they stay with the
    -- superuser who installed them, or jetfn_owner could rewrite code that superusers run.
    where n.nspname = 'jetfn' and p.prorettype <> 'event_trigger'::regtype
  loop
    execute format('alter function %s owner to jetfn_owner', item.signature);
  end loop;
end
$$;

-- Tables created later in the audited schemas are captured by an event trigger the moment their
-- DDL ends (a table a superuser creates is handed to jetfn_owner first). Its function stays with
-- the superuser running this file; creating the trigger needs one.
do $$
begin
  if not (select rolsuper from pg_roles where rolname = current_user) then
    raise warning 'not a superuser: no event trigger; jetfn migrate and the runtime attach new tables';
    return;
  end if;
  execute format('alter function jetfn.attach_audit_after_ddl() owner to %I', current_user);
  if not exists (select from pg_event_trigger
                 where evtname = 'jetfn_audit_new_tables' and evtfoid = 'jetfn.attach_audit_after_ddl()'::regprocedure) then
    drop event trigger if exists jetfn_audit_new_tables;
    create event trigger jetfn_audit_new_tables on ddl_command_end
      when tag in ('CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO', 'ALTER TABLE')
      execute function jetfn.attach_audit_after_ddl();
  end if;
  drop function if exists jetfn.attach_audit_on_ddl();
end
$$;

-- The app's schemas: the owner creates the app's tables there (since Postgres 15 nobody may
-- create in `public` unless granted); the runtime changes rows, nothing structural.
do $$
declare
  schema_name text;
begin
  for schema_name in select s.schema_name from jetfn.audited_schemas s loop
    execute format('grant usage, create on schema %I to jetfn_owner', schema_name);
    execute format('grant usage on schema %I to jetfn_runtime', schema_name);
    execute format('grant select, insert, update, delete on all tables in schema %I to jetfn_runtime', schema_name);
    execute format('grant usage, select on all sequences in schema %I to jetfn_runtime', schema_name);
    execute format('alter default privileges for role jetfn_owner in schema %I
                    grant select, insert, update, delete on tables to jetfn_runtime', schema_name);
    execute format('alter default privileges for role jetfn_owner in schema %I
                    grant usage, select on sequences to jetfn_runtime', schema_name);
  end loop;
end
$$;

-- jetfn's own tables: the runtime records invocations; it may only read the audit log.
grant usage on schema jetfn to jetfn_runtime;
grant select, insert, update on jetfn.invocations to jetfn_runtime;
-- Durable steps' memos: written by jetfn.record_step in the step's transaction.
grant select, insert, update on jetfn.steps to jetfn_runtime;
-- The transactional outbox: written in the invocation's transaction, deleted once published.
grant select, insert, delete on jetfn.outbox to jetfn_runtime;
-- Rows the relay refuses are moved aside: the runtime (so handler code too) may add them there, not
-- read, change or remove them. `jetfn outbox` runs as the owner.
grant insert on jetfn.outbox_set_aside to jetfn_runtime;
grant select on jetfn.migrations, jetfn.audited_schemas, jetfn.audit_log, jetfn.audit_seals, jetfn.audit_anchors, jetfn.audit_lookup, jetfn.audit_tail to jetfn_runtime;
revoke insert, update, delete, truncate on jetfn.audit_log, jetfn.audit_seals, jetfn.audit_anchors, jetfn.audit_lookup from public, jetfn_runtime;
grant execute on all functions in schema jetfn to jetfn_runtime;
-- Read as each job's part of a shared transaction begins: which audit rows are that job's.
grant select on sequence jetfn.audit_log_id_seq to jetfn_runtime;
-- Pruning drops audit data: the owner's decision, not the runtime's.
revoke execute on function jetfn.prune_audit(interval) from public, jetfn_runtime;
