-- Waiting for an event (docs/durable-steps.md, "Wait for an event"): `ctx.waitForEvent(name, { event,
-- match, timeout })` ends the run until an event of that name whose data matches is stored in
-- JETFN_EVENTS, or until its timeout.
--
-- 1. jetfn.invocations: status 'awaiting' (its check validated apart by 0038, without blocking
--    writes); `wake_at` holds the wait's timeout, `resume` the token `<seq>t` of the timeout's
--    resumption.
-- 2. jetfn.await_event: the wait's step row `waiting` (kind 'wait', the event's name, the match as
--    sorted dotted paths and their values, `after_at` where the events it may take begin, its
--    timeout in `wake_at`) and the record `awaiting`, in one statement with the timeout
--    resumption's outbox row (db/outbox.ts). Fenced as suspend_invocation is. `after_at` is the
--    end of the invocation's latest other step (or its enqueue time), less a second for clocks
--    apart: an event emitted by the step just before the wait counts. Its token's seq must be the
--    wait's (JF008 otherwise).
-- 3. jetfn.match_values: the values an event's data holds at the paths, as a JSON array (null for a
--    path it lacks), compared with a waiter's `match_values` through steps_waiting_idx (0039).
-- 4. jetfn.resolve_wait: an event the matcher (or the waiter's own catch-up) found: the step row
--    `matched` with the event, the record `queued` with the token `<seq>m` of the resumption the
--    runtime writes in the same statement; only while the record is `awaiting` and the row
--    `waiting`, for an event stored after `after_at` that no other wait of the invocation took
--    (JF004 otherwise).
-- 5. jetfn.time_out_wait: the run of the timeout's token ends the wait `timed_out`, unless it was
--    matched first.
-- 6. jetfn.resume_invocation refuses runtimes of the versions before an invocation with a wait
--    (JF006), as 0036 made it refuse one with a failed step.

-- When the events stored before the wait began were read (its catch-up): a sweep catches up the
-- waits whose runtime did not (it died, or NATS did not answer).
alter table jetfn.steps add column caught_up_at timestamptz;

alter table jetfn.invocations
  drop constraint invocations_status_check,
  add constraint invocations_status_check check (status in ('queued', 'running', 'succeeded', 'failed', 'dead',
    'dropped', 'cancelled', 'superseded', 'sleeping', 'awaiting')) not valid;

create function jetfn.match_values(p_data jsonb, p_paths text[]) returns jsonb
language sql immutable parallel safe as $$
  select coalesce(pg_catalog.jsonb_agg(coalesce(p_data operator(pg_catalog.#>) pg_catalog.string_to_array(u.path, '.'),
                                                'null'::pg_catalog.jsonb) order by u.ord), '[]'::pg_catalog.jsonb)
  from pg_catalog.unnest(p_paths) with ordinality as u(path, ord)
$$;

-- Returns the wait's after_at.
create function jetfn.await_event(
  p_id text, p_function text, p_attempt integer, p_input jsonb,
  p_enqueued_at timestamptz, p_started_at timestamptz, p_stream_seq bigint, p_retry_of text,
  p_priority smallint, p_debounce_key text, p_singleton_key text,
  p_key text, p_event text, p_match_paths text[], p_match_values jsonb, p_timeout_at timestamptz,
  p_token text, p_run_token text
) returns timestamptz
language plpgsql as $$
declare
  v_seq integer;
  v_after timestamptz;
  v_enqueued timestamptz;
begin
  insert into jetfn.invocations as i
    (id, function, status, attempts, input, enqueued_at, started_at, updated_at, stream_seq,
     retry_of, priority, debounce_key, singleton_key, resume, resume_attempts, wake_at)
  values
    (p_id, p_function, 'awaiting', p_attempt, p_input, p_enqueued_at, p_started_at, clock_timestamp(),
     p_stream_seq, p_retry_of, p_priority, p_debounce_key, p_singleton_key, p_token, p_attempt - 1, p_timeout_at)
  on conflict (id) do update set
    status = 'awaiting', attempts = greatest(i.attempts, excluded.attempts), updated_at = excluded.updated_at,
    resume = excluded.resume, resume_attempts = greatest(i.attempts, excluded.attempts) - 1, wake_at = excluded.wake_at,
    progress = null, priority = coalesce(i.priority, excluded.priority),
    debounce_key = coalesce(i.debounce_key, excluded.debounce_key),
    singleton_key = coalesce(i.singleton_key, excluded.singleton_key)
  where not jetfn.is_final(i.status) and i.function = excluded.function
    and i.resume is not distinct from p_run_token and i.status not in ('sleeping', 'awaiting')
  returning i.enqueued_at into v_enqueued;
  if not found then
    if exists (select from jetfn.invocations where id = p_id and function <> p_function) then
      raise exception 'invocation id % already belongs to another function than %', p_id, p_function
        using errcode = 'JF002';
    end if;
    if exists (select from jetfn.invocations where id = p_id and jetfn.is_final(status)) then
      raise exception 'invocation % has already ended', p_id using errcode = 'JF001';
    end if;
    raise exception 'invocation % was suspended by another run, or resumed by a newer one', p_id
      using errcode = 'JF005';
  end if;
  select coalesce(max(seq), 0) + 1,
         coalesce(max(coalesce(finished_at, started_at)), v_enqueued, clock_timestamp()) - interval '1 second'
    into v_seq, v_after
    from jetfn.steps where invocation_id = p_id;
  -- The timeout's token names the wait's seq: a guess the runtime made, which must be right, or a
  -- resumption of one wait could time out another (JF008: the runtime tries again with the seq).
  if p_token <> v_seq::text || 't' then
    raise exception 'wait % of invocation % is step %, not the one its token names', p_key, p_id, v_seq
      using errcode = 'JF008';
  end if;
  insert into jetfn.steps (invocation_id, key, seq, kind, status, attempts, event, match_paths, match_values,
                           after_at, wake_at, txid, started_at, updated_at)
  values (p_id, p_key, v_seq, 'wait', 'waiting', 1, p_event, p_match_paths, p_match_values, v_after, p_timeout_at,
          pg_catalog.txid_current(), clock_timestamp(), clock_timestamp())
  on conflict (invocation_id, key) do nothing;
  if not found then
    raise exception 'step % of invocation % was already recorded', p_key, p_id using errcode = 'JF004';
  end if;
  return v_after;
end
$$;

create function jetfn.resolve_wait(p_id text, p_key text, p_event_id text, p_event_time timestamptz,
                                   p_result jsonb, p_token text) returns void
language plpgsql as $$
begin
  update jetfn.invocations
  set status = 'queued', resume = p_token, wake_at = null, updated_at = clock_timestamp()
  where id = p_id and status = 'awaiting';
  if found then
    update jetfn.steps s
    set status = 'matched', event_id = p_event_id, result = p_result, wake_at = null,
        finished_at = clock_timestamp(), updated_at = clock_timestamp()
    where s.invocation_id = p_id and s.key = p_key and s.kind = 'wait' and s.status = 'waiting'
      and s.after_at <= p_event_time
      and not exists (select from jetfn.steps t where t.invocation_id = p_id and t.event_id = p_event_id);
  end if;
  if not found then
    raise exception 'wait % of invocation % is not waiting for event %', p_key, p_id, p_event_id using errcode = 'JF004';
  end if;
end
$$;

-- Whether the wait timed out now (false: an event matched it first, and that resumption owns the run on).
create function jetfn.time_out_wait(p_id text, p_key text, p_run_token text) returns boolean
language plpgsql as $$
begin
  perform from jetfn.invocations where id = p_id and resume = p_run_token and status = 'running' for update;
  if not found then
    return false;
  end if;
  update jetfn.steps
  set status = 'timed_out', wake_at = null, finished_at = clock_timestamp(), updated_at = clock_timestamp()
  where invocation_id = p_id and key = p_key and kind = 'wait' and status = 'waiting';
  return found;
end
$$;

-- As 0036's, refusing runtimes of the versions before (p_step_failures false) an invocation with a
-- wait too: they would read it as a step of another kind (E_STEP_MISMATCH) and end the job dead.
create or replace function jetfn.resume_invocation(p_id text, p_function text, p_token text, p_delivery integer,
                                        p_attempt integer, p_step_failures boolean)
returns table (outcome text, attempt integer, input jsonb, enqueued_at timestamptz, stream_seq bigint,
               retry_of text, priority smallint, debounce_key text, singleton_key text)
language plpgsql as $$
declare
  found_row jetfn.invocations;
begin
  update jetfn.invocations i
  set status = 'running', started_at = clock_timestamp(), updated_at = clock_timestamp(),
      attempts = greatest(i.attempts, coalesce(p_attempt, i.resume_attempts + p_delivery))
  where i.id = p_id and i.function = p_function and i.resume = p_token and not jetfn.is_final(i.status)
  returning * into found_row;
  if found then
    -- Only a run that would go on is refused (the raise undoes the update): stale and ended ones are
    -- acked as before.
    if not p_step_failures and exists (
      select from jetfn.steps s
      where s.invocation_id = p_id and (s.kind = 'wait' or (s.kind = 'step' and s.status in ('retrying', 'failed')))
    ) then
      raise exception 'invocation % has a failed step or a wait: a runtime of a version before migration 0037 cannot run it on', p_id
        using errcode = 'JF006';
    end if;
    update jetfn.steps s set status = 'succeeded', finished_at = clock_timestamp(), updated_at = clock_timestamp()
    where s.invocation_id = p_id and s.kind = 'sleep' and s.status = 'sleeping'
      and s.wake_at <= clock_timestamp() + interval '1 second';
    return query select 'run'::text, coalesce(p_attempt, found_row.resume_attempts + p_delivery), found_row.input, found_row.enqueued_at,
                        found_row.stream_seq, found_row.retry_of, found_row.priority, found_row.debounce_key,
                        found_row.singleton_key;
    return;
  end if;
  select * into found_row from jetfn.invocations i where i.id = p_id;
  return query select case when found_row.id is null then 'missing'
                           when found_row.function <> p_function then 'foreign'
                           when jetfn.is_final(found_row.status) then 'ended'
                           else 'stale' end,
                      null::integer, null::jsonb, null::timestamptz, null::bigint, null::text, null::smallint,
                      null::text, null::text;
end
$$;

do $$
begin
  if exists (select from pg_catalog.pg_roles where rolname = 'jetfn_runtime') then
    grant execute on function jetfn.match_values(jsonb, text[]) to jetfn_runtime;
    grant execute on function jetfn.await_event(text, text, integer, jsonb, timestamptz, timestamptz, bigint, text,
      smallint, text, text, text, text, text[], jsonb, timestamptz, text, text) to jetfn_runtime;
    grant execute on function jetfn.resolve_wait(text, text, text, timestamptz, jsonb, text) to jetfn_runtime;
    grant execute on function jetfn.time_out_wait(text, text, text) to jetfn_runtime;
  end if;
end
$$;
