-- The generated capture functions read their transaction's id as txid_current() instead of
-- pg_current_xact_id()::text::int8. It is the same 64-bit value: txid_current is the same C
-- function as pg_current_xact_id, declared to return int8. The conversion through text was not
-- free: it looks up two types' input and output functions whenever a transaction first runs the
-- capture, which made up about 2 µs of the Postgres CPU of a single-row audited transaction
-- (36 -> 34 µs; BENCHMARKS.md, "The seventh session"). Every attached table's functions are
-- generated again below. (txid_current is documented as kept for compatibility; should a release
-- ever drop it, a migration changes this head again before that release is supported.)
create or replace function jetfn.audit_function_head() returns text
language sql immutable as $$
  select $head$#variable_conflict use_variable
declare
  stamp_function pg_catalog.text := pg_catalog.current_setting('jetfn.function', true);
  stamp_invocation pg_catalog.text := pg_catalog.current_setting('jetfn.invocation_id', true);
  stamp_attempt pg_catalog.text := pg_catalog.current_setting('jetfn.attempt', true);
  xact pg_catalog.int8 := pg_catalog.txid_current();$head$
$$;

-- The functions every audit trigger calls, written anew. Only their bodies change (same names,
-- same triggers), so unlike attach_audit this takes no lock on the tables themselves. A trigger
-- whose function is not the one its table's oid names (the database was restored from a dump, so
-- its tables have new oids) is left to attach_audit, which attaches the table afresh.
do $$
declare
  trigger_row record;
begin
  for trigger_row in
    select t.tgrelid::regclass as target, p.proname::text as function_name,
           upper(substr(t.tgname, length('jetfn_audit_') + 1)) as operation
    from pg_trigger t join pg_proc p on p.oid = t.tgfoid
    where t.tgname in ('jetfn_audit_insert', 'jetfn_audit_update', 'jetfn_audit_delete')
    order by 1, 3
  loop
    if trigger_row.function_name = jetfn.audit_function_name(trigger_row.target, trigger_row.operation) then
      execute format('create or replace function jetfn.%I() returns trigger language plpgsql security definer as %L',
                     trigger_row.function_name,
                     case trigger_row.operation when 'UPDATE' then jetfn.audit_update_function_source(trigger_row.target)
                                                else jetfn.audit_row_function_source(trigger_row.target, trigger_row.operation) end);
    else
      perform jetfn.attach_audit(trigger_row.target);
    end if;
  end loop;
end
$$;
