-- Database roles for production. Run once per database as a superuser, after `jetfn migrate`:
--   psql "$ADMIN_URL" -f schema/roles.sql
-- then set passwords (ALTER ROLE ... PASSWORD ...) and connect:
--   jetfn migrate  as jetfn_owner   (owns jetfn's tables and the app's tables, runs migrations)
--   jetfn start    as jetfn_runtime (reads and writes app rows; cannot touch the audit log,
--                                    alter tables, or disable the triggers that feed it)
-- A table's owner can disable its triggers, so the runtime must not own the audited tables.
-- The audit triggers and jetfn's maintenance functions run as jetfn_owner (security definer).
-- Re-running this file is safe.

do $$
begin
  if not exists (select from pg_roles where rolname = 'jetfn_owner') then
    create role jetfn_owner login;
  end if;
  if not exists (select from pg_roles where rolname = 'jetfn_runtime') then
    create role jetfn_runtime login;
  end if;
exception when duplicate_object then
  null; -- created concurrently by another session
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
    where n.nspname = 'jetfn'
  loop
    execute format('alter function %s owner to jetfn_owner', item.signature);
  end loop;
end
$$;

-- The runtime: row changes in the app's schemas, nothing structural.
grant usage on schema public to jetfn_runtime;
grant select, insert, update, delete on all tables in schema public to jetfn_runtime;
grant usage, select on all sequences in schema public to jetfn_runtime;
alter default privileges for role jetfn_owner in schema public grant select, insert, update, delete on tables to jetfn_runtime;
alter default privileges for role jetfn_owner in schema public grant usage, select on sequences to jetfn_runtime;

-- jetfn's own tables: the runtime records invocations; it may only read the audit log.
grant usage on schema jetfn to jetfn_runtime;
grant select, insert, update on jetfn.invocations to jetfn_runtime;
-- The transactional outbox: written in the invocation's transaction, deleted once published.
grant select, insert, delete on jetfn.outbox to jetfn_runtime;
grant select on jetfn.migrations, jetfn.audited_schemas, jetfn.audit_log, jetfn.audit_seals, jetfn.audit_anchors, jetfn.audit_lookup, jetfn.audit_tail to jetfn_runtime;
revoke insert, update, delete, truncate on jetfn.audit_log, jetfn.audit_seals, jetfn.audit_anchors, jetfn.audit_lookup from public, jetfn_runtime;
grant execute on all functions in schema jetfn to jetfn_runtime;
-- Pruning drops audit data: the owner's decision, not the runtime's.
revoke execute on function jetfn.prune_audit(interval) from public, jetfn_runtime;
