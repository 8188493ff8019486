-- Tables of the audited schemas get their audit capture the moment their DDL ends, through an
-- event trigger. This function replaces 0002's jetfn.attach_audit_on_ddl(), for two reasons:
--
-- * A table that jetfn's owner cannot manage could not be attached. The capture is attached by
--   jetfn.attach_audit, which runs as jetfn's owner; with the roles of schema/roles.sql that is
--   jetfn_owner, who may neither create nor drop triggers on a table a superuser created, so the
--   superuser's CREATE TABLE failed ("permission denied for table ..."). Such a table is now first
--   handed to jetfn's owner, with the privileges that owner's default privileges give its own new
--   tables in that schema (and their sequences): a table a superuser creates ends up like one
--   jetfn_owner creates, captured, writable by the runtime, and not owned by the runtime (a
--   table's owner can disable its triggers). The same holds for a table later given to another
--   role (ALTER TABLE ... OWNER TO): it comes back to jetfn's owner.
-- * The function runs as whoever issued the DDL, anywhere in the database, often a superuser.
--   schema/roles.sql handed the old one to jetfn_owner with the rest of jetfn, so jetfn_owner could
--   rewrite code that superusers then ran. This one stays with a superuser (roles.sql leaves event
--   trigger functions where they are), reads only the catalogs and jetfn.audited_schemas (checked
--   to be a plain table of text under a lock: a view, or a type with casts of jetfn_owner's, would
--   run their functions here), and calls jetfn's code (jetfn.attach_audit, security definer) only
--   for tables of the audited schemas.
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

-- Swapping the event trigger needs a superuser, as creating it did; without one, schema/roles.sql
-- (run as a superuser) swaps it.
do $$
begin
  if (select rolsuper from pg_roles where rolname = current_user) then
    drop event trigger if exists jetfn_audit_new_tables;
    create event trigger jetfn_audit_new_tables on ddl_command_end
      when tag in ('CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO', 'ALTER TABLE')
      execute function jetfn.attach_audit_after_ddl();
  end if;
  if not exists (select from pg_event_trigger where evtfoid = 'jetfn.attach_audit_on_ddl()'::regprocedure) then
    drop function jetfn.attach_audit_on_ddl();
  end if;
end
$$;
