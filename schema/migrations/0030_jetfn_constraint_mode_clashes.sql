-- Constraint names are unique per table, not per schema, and SET CONSTRAINTS s.name sets every
-- deferrable constraint of that name in schema s. So when a constraint declared INITIALLY DEFERRED
-- shares its name (and schema) with one declared INITIALLY IMMEDIATE, the statements of
-- jetfn.constraint_modes() (0027) named it with the immediate ones: a later job of a shared
-- transaction had its deferred key checked at each statement, and a handler that relied on the
-- deferral (a child row before its parent) failed there while it succeeded alone or first in a
-- transaction. No SET CONSTRAINTS statement gives two such constraints their declared modes.

-- The names that clash so: 'schema.name' (quoted as SET CONSTRAINTS takes them), in name order, or
-- null when none does. Schemas the role cannot use are left out, as constraint_modes() leaves them
-- out: it never names their constraints.
create function jetfn.constraint_mode_clashes() returns text[]
language sql stable set search_path = pg_catalog as $$
  select array_agg(clash order by clash) from (
    select quote_ident(n.nspname) || '.' || quote_ident(c.conname) as clash
    from pg_constraint c join pg_namespace n on n.oid = c.connamespace
    where c.condeferrable and has_schema_privilege(n.oid, 'USAGE')
    group by n.nspname, c.conname
    having bool_or(c.condeferred) and not bool_and(c.condeferred)
  ) clashes
$$;

-- As in 0027, and null when a clash exists: no statement can put the declared modes back, so a
-- shared transaction must end after its first job (runtime/db/constraint-modes.ts), whose part
-- starts from them. '' still means none is needed; a clash needs a constraint declared INITIALLY
-- DEFERRED, so the usual case (none) looks no further.
create or replace function jetfn.constraint_modes() returns text
language plpgsql stable set search_path = pg_catalog as $$
declare
  any_deferred boolean;
  immediate_names text;
begin
  select bool_or(c.condeferred),
         string_agg(distinct quote_ident(n.nspname) || '.' || quote_ident(c.conname), ', ')
           filter (where not c.condeferred and has_schema_privilege(n.oid, 'USAGE'))
    into any_deferred, immediate_names
  from pg_constraint c join pg_namespace n on n.oid = c.connamespace
  where c.condeferrable;
  if not coalesce(any_deferred, false) then
    return '';
  end if;
  if jetfn.constraint_mode_clashes() is not null then
    return null;
  end if;
  return 'set constraints all deferred' || coalesce('; set constraints ' || immediate_names || ' immediate', '');
end
$$;
