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
-- {"function", "invocation", "attempt"} objects, one per job whose writes it keeps.
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
  select l.function, l.invocation_id, l.attempt into stranger from jetfn.audit_log l
  where l.txid = xact
    and not exists (
      select from jsonb_to_recordset(p_members) as m(function text, invocation text, attempt integer)
      where m.function = l.function and m.invocation = l.invocation_id and m.attempt = l.attempt)
  limit 1;
  if found then
    raise exception 'a shared transaction holds audit rows stamped as %/%/% (function/invocation/attempt), none of its jobs',
      coalesce(stranger.function, 'none'), coalesce(stranger.invocation_id, 'none'),
      coalesce(stranger.attempt::text, 'none') using errcode = 'JF003';
  end if;
end
$$;
