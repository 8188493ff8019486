-- A job's deferred constraints (constraint triggers, keys and unique checks declared DEFERRABLE
-- INITIALLY DEFERRED, or deferred by the job's SET CONSTRAINTS) fire at the end of its own part of
-- a transaction: the runtime sends SET CONSTRAINTS ALL IMMEDIATE there, so they run under the job's
-- audit stamp and before the check of its audit rows (jetfn.verify_invocation, jetfn.verify_group),
-- not at a COMMIT the check cannot follow and, in a shared transaction, under the last job's stamp.
--
-- Constraint modes set in a savepoint survive its release, and Postgres has no statement that puts
-- them back as declared. So the next job of a shared transaction starts from what this function
-- returns (read at most once a second: runtime/db/constraint-modes.ts): the statements that, after
-- SET CONSTRAINTS ALL IMMEDIATE, give every deferrable constraint its declared mode. Empty when none is declared
-- INITIALLY DEFERRED (ALL IMMEDIATE is then every declared mode); else ALL DEFERRED, then, by name,
-- the deferrable constraints declared INITIALLY IMMEDIATE (a name costs a catalog lookup per job,
-- ALL none). Constraints of a schema the role cannot use are left out: naming them would fail, and
-- the role cannot write their tables. Two constraints of one schema with one name and different
-- modes both get INITIALLY IMMEDIATE's.
create function jetfn.constraint_modes() returns text
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
  return 'set constraints all deferred' || coalesce('; set constraints ' || immediate_names || ' immediate', '');
end
$$;
