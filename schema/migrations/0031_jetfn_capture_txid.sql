-- The generated capture functions read their transaction's id as txid_current() instead of
-- pg_current_xact_id()::text::int8. It is the same 64-bit value: txid_current is the same C
-- function as pg_current_xact_id, declared to return int8. The conversion through text was not
-- free: it looks up two types' input and output functions whenever a transaction first runs the
-- capture, which made up about 2 µs of the Postgres CPU of a single-row audited transaction
-- (35 -> 33 µs; the measurement is in BENCHMARKS.md). Every attached table's functions are
-- generated again below.
create or replace function jetfn.audit_function_head() returns text
language sql immutable as $$
  select $head$#variable_conflict use_variable
declare
  stamp_function pg_catalog.text := pg_catalog.current_setting('jetfn.function', true);
  stamp_invocation pg_catalog.text := pg_catalog.current_setting('jetfn.invocation_id', true);
  stamp_attempt pg_catalog.text := pg_catalog.current_setting('jetfn.attempt', true);
  xact pg_catalog.int8 := pg_catalog.txid_current();$head$
$$;

-- The functions of every attached table, written anew. Only their bodies change (same names, same
-- triggers), so unlike attach_audit this takes no lock on the tables themselves.
do $$
declare
  target regclass;
  operation text;
begin
  for target in
    select distinct t.tgrelid::regclass from pg_trigger t where t.tgname = 'jetfn_audit_insert' order by 1
  loop
    foreach operation in array array['INSERT', 'UPDATE', 'DELETE'] loop
      execute format('create or replace function jetfn.%I() returns trigger language plpgsql security definer as %L',
                     jetfn.audit_function_name(target, operation),
                     case operation when 'UPDATE' then jetfn.audit_update_function_source(target)
                                    else jetfn.audit_row_function_source(target, operation) end);
    end loop;
  end loop;
end
$$;
