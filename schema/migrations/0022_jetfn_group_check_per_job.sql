-- The check before a shared transaction's COMMIT (0019) asked only whether each audit row names
-- some job the transaction keeps. A job whose statements call a database function that sets the
-- audit stamp (the statement guard cannot read inside it) could stamp its rows as another job of
-- the same transaction, and they committed as that job's. Now each job's rows must carry its own
-- stamp.
--
-- The runtime reads the audit log's sequence as each job's part of the transaction begins (in
-- the same message as its SET LOCAL stamp, see runtime/db/commit-groups.ts) and passes the value
-- as the member's "after": the audit rows a job wrote are those of the transaction with an id
-- above its mark and up to the next member's. The mark lives in the runtime's memory, where
-- nothing a statement runs can change it; ids come from one sequence (CACHE 1), so they grow in
-- the order rows are written.

create or replace function jetfn.verify_group(p_members jsonb) returns void
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
        -- A runtime from before this migration sends no marks: it keeps the weaker check.
        and (m.after is null or (l.id > m.after and (m.until is null or l.id <= m.until))))
  limit 1;
  if found then
    raise exception 'a shared transaction holds an audit row stamped as %/%/% (function/invocation/attempt) that was not written in that job''s part of it',
      coalesce(stranger.function, 'none'), coalesce(stranger.invocation_id, 'none'),
      coalesce(stranger.attempt::text, 'none') using errcode = 'JF003';
  end if;
end
$$;

-- The runtime reads the sequence (SELECT allows reading it, not advancing or setting it).
do $$
begin
  if exists (select from pg_catalog.pg_roles where rolname = 'jetfn_runtime') then
    grant select on sequence jetfn.audit_log_id_seq to jetfn_runtime;
  end if;
end
$$;
