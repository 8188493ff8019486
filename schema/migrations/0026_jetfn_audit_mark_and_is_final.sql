-- 1. The group check (jetfn.verify_group, baseline) reads each member's part from its place in
--    p_members, which the runtime sends in the order the parts ran, instead of sorting the members
--    by their marks: marks tie whenever a job wrote nothing, and the order of equal keys is not
--    Postgres's to keep. The member whose part began the transaction comes with no mark ("after"
--    null): the runtime no longer reads the sequence for it, as no row of the transaction can
--    precede it. Only the first member may come without one.
-- 2. jetfn.is_final(status): the statuses after which nothing changes a job's record (succeeded,
--    dead, dropped, cancelled, superseded), written once. The success upserts below and the
--    runtime's failure, cancel and superseded upserts use it. It is an immutable SQL function, so
--    the planner inlines it: their plans are the same as with the list written out. The status
--    CHECK keeps its literal list: a constraint's expression is prepared again for every statement
--    that writes the table, and inlining a function there parses its body each time.

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
    select e.m ->> 'function' as function, e.m ->> 'invocation' as invocation,
           (e.m ->> 'attempt')::integer as attempt, (e.m ->> 'after')::bigint as after, e.part,
           lead((e.m ->> 'after')::bigint) over (order by e.part) as until
    from jsonb_array_elements(p_members) with ordinality as e(m, part)
  )
  select l.function, l.invocation_id, l.attempt into stranger from jetfn.audit_log l
  where l.txid = xact
    and not exists (
      select from member m
      where m.function = l.function and m.invocation = l.invocation_id and m.attempt = l.attempt
        and (l.id > m.after or (m.after is null and m.part = 1)) and (m.until is null or l.id <= m.until))
  limit 1;
  if found then
    raise exception 'a shared transaction holds an audit row stamped as %/%/% (function/invocation/attempt) that was not written in that job''s part of it',
      coalesce(stranger.function, 'none'), coalesce(stranger.invocation_id, 'none'),
      coalesce(stranger.attempt::text, 'none') using errcode = 'JF003';
  end if;
end
$$;

-- Schema-qualified throughout and without SET search_path (which would keep it from being inlined).
create function jetfn.is_final(p_status text) returns boolean
language sql immutable parallel safe as $$
  select p_status operator(pg_catalog.=) any ('{succeeded,dead,dropped,cancelled,superseded}'::pg_catalog.text[])
$$;

create or replace function jetfn.complete_invocation(
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
  where not jetfn.is_final(i.status) and i.function = excluded.function;
  if not found then
    if exists (select from jetfn.invocations where id = p_id and function <> p_function) then
      raise exception 'invocation id % already belongs to another function than %', p_id, p_function
        using errcode = 'JF002';
    end if;
    raise exception 'invocation % was already finished by another attempt', p_id using errcode = 'JF001';
  end if;
end
$$;

create or replace function jetfn.record_successes(p_records jsonb) returns setof text
language plpgsql as $$
begin
  return query
  with recorded as (
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
    where not jetfn.is_final(i.status) and i.function = excluded.function
    returning i.id
  )
  select recorded.id from recorded;
end
$$;
