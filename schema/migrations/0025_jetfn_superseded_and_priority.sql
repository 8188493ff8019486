-- Debounce, singletons and priority (docs/flow-control-keys-and-priority.md).
--
-- 1. A debounced job that a later job of the same key replaced while it waited ends `superseded`
--    (its error names the job that replaced it, code E_SUPERSEDED). The status is final like
--    succeeded, dead, dropped and cancelled: the completion functions below are the baseline's and
--    0023's with 'superseded' added to the final statuses, so an attempt that would still finish after it is
--    fenced out (JF001).
-- 2. ctx.enqueue(..., { priority }) and enqueueInTransaction(..., { priority }) write a job row with
--    a header Jetfn-Priority (one digit, 1-3); the relay publishes such a row to the function's
--    priority subject. The outbox rules (0018, 0021) now allow that header too, and nothing else.
--    runtime/outbox-rules.ts checks the same.
alter table jetfn.invocations drop constraint invocations_status_check;
alter table jetfn.invocations add constraint invocations_status_check
  check (status in ('queued', 'running', 'succeeded', 'failed', 'dead', 'dropped', 'cancelled', 'superseded'));

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
  where i.status not in ('succeeded', 'dead', 'dropped', 'cancelled', 'superseded') and i.function = excluded.function;
  if not found then
    if exists (select from jetfn.invocations where id = p_id and function <> p_function) then
      raise exception 'invocation id % already belongs to another function than %', p_id, p_function
        using errcode = 'JF002';
    end if;
    raise exception 'invocation % was already finished by another attempt', p_id using errcode = 'JF001';
  end if;
end
$$;

-- The batched success upsert (0023's record_successes, which complete_invocations() calls) with
-- 'superseded' among the final statuses.
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
    where i.status not in ('succeeded', 'dead', 'dropped', 'cancelled', 'superseded') and i.function = excluded.function
    returning i.id
  )
  select recorded.id from recorded;
end
$$;

create or replace function jetfn.outbox_row_problem(id text, subject text, headers jsonb, body text) returns text
language plpgsql immutable parallel safe as $$
declare
  invocation text;
begin
  if id is null or subject is null or headers is null or body is null then
    return 'id, subject, headers and body are required';
  end if;
  if pg_catalog.octet_length(body) operator(pg_catalog.>) 67108864 then
    return 'the body is larger than 64 MiB';
  end if;
  if (subject collate pg_catalog."C") operator(pg_catalog.~) '^fn\.job\.[a-z0-9_-]+(\.[a-z0-9_-]+)*$'
     and pg_catalog.char_length(subject) operator(pg_catalog.<=) 207 then
    -- "fn.job." is 7 characters: the function's name starts at 8, "<name>:" is length - 6 long.
    if not pg_catalog.starts_with(id, pg_catalog.substr(subject, 8) operator(pg_catalog.||) ':') then
      return 'a job''s id must be "<function name>:<invocation id>"';
    end if;
    invocation := pg_catalog.substr(id, pg_catalog.char_length(subject) operator(pg_catalog.-) 5);
    if (invocation collate pg_catalog."C") operator(pg_catalog.!~) '^[A-Za-z0-9_-]+$'
       or pg_catalog.char_length(invocation) not between 8 and 128 then
      return 'a job''s invocation id must be 8-128 letters, digits, "-" or "_"';
    end if;
    if headers operator(pg_catalog.<>) '{}'::pg_catalog.jsonb
       and not (
         (headers operator(pg_catalog.-) 'Jetfn-Not-Before'::text operator(pg_catalog.-) 'Jetfn-Priority'::text)
           operator(pg_catalog.=) pg_catalog.jsonb_build_object('Jetfn-Id', invocation)
         and (not (headers operator(pg_catalog.?) 'Jetfn-Not-Before') or (
           pg_catalog.jsonb_typeof(headers operator(pg_catalog.->) 'Jetfn-Not-Before') operator(pg_catalog.=) 'string'
           and ((headers operator(pg_catalog.->>) 'Jetfn-Not-Before') collate pg_catalog."C")
             operator(pg_catalog.~) '^[0-9]{1,15}$'))
         and (not (headers operator(pg_catalog.?) 'Jetfn-Priority') or (
           pg_catalog.jsonb_typeof(headers operator(pg_catalog.->) 'Jetfn-Priority') operator(pg_catalog.=) 'string'
           and ((headers operator(pg_catalog.->>) 'Jetfn-Priority') collate pg_catalog."C")
             operator(pg_catalog.~) '^[1-3]$'))
       ) then
      return 'a job''s headers are Jetfn-Id, equal to its invocation id, and optionally Jetfn-Not-Before, its due time in epoch milliseconds, and Jetfn-Priority, 1 to 3';
    end if;
    return null;
  end if;
  if (subject collate pg_catalog."C") operator(pg_catalog.~) '^fn\.event\.[a-z0-9_-]+(\.[a-z0-9_-]+)*$'
     and pg_catalog.char_length(subject) operator(pg_catalog.<=) 209 then
    if (id collate pg_catalog."C") operator(pg_catalog.!~) '^[!-~]+$' or pg_catalog.char_length(id) > 128 then
      return 'an event''s id must be 1-128 printable ASCII characters, no spaces';
    end if;
    if headers operator(pg_catalog.<>) '{}'::pg_catalog.jsonb then
      return 'an event has no headers';
    end if;
    return null;
  end if;
  return 'the subject must be fn.job.<function name> or fn.event.<event name>';
end
$$;
