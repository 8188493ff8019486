-- Per-step retries (docs/durable-steps.md, "Retries: per step, and per job"): a step that throws
-- rolls back its transaction, and its failed attempt is recorded outside it, in its row.
--
-- 1. jetfn.record_step_failure: the step's row `retrying` (an attempt follows at p_retry_at) or
--    `failed` (no attempt follows: ctx.step throws E_STEP_FAILED, and every later run throws it
--    again at the same place), with its attempts, its last error and the newest 20. When a retry
--    follows, the record becomes `failed` with `wake_at` and the token `<seq>r<attempt>` of the
--    resumption that runs the step again, whose outbox row the runtime writes in the same statement
--    (db/outbox.ts), as a sleep's. Fenced as record_step is (JF001, JF002, JF005), and on the step's
--    attempt: a failure already recorded, or a step recorded succeeded, is JF004.
-- 2. jetfn.record_step counts a step's attempts: 1 for a step that commits at once, one more than
--    its recorded failures for a step that commits on a retry (its `retrying` row becomes
--    `succeeded`). Before, a step's row held the job's attempt that ran it.
-- 3. jetfn.reopen_invocation: `jetfn retry <id>` of a dead job that recorded steps reopens it under
--    its id, its failed steps to be tried again with their attempts counted from 0, and the run of
--    the token given (its resumption's outbox row written in the same statement) replays the rest.
-- 4. Runtimes of the version before read a `retrying` or `failed` step as one that returned null.
--    They call jetfn.resume_invocation with five arguments: that form now refuses (JF006) to resume
--    an invocation holding such a step, so its resumption is left unacked and comes back, to a
--    runtime of this version (which calls the six-argument form). Runs of the job's own message
--    read no function first: docs/production.md asks to upgrade every runtime together.

create function jetfn.record_step_failure(
  p_id text, p_function text, p_attempt integer, p_input jsonb,
  p_enqueued_at timestamptz, p_started_at timestamptz, p_stream_seq bigint, p_retry_of text,
  p_priority smallint, p_debounce_key text, p_singleton_key text,
  p_key text, p_step_attempt integer, p_error jsonb, p_step_started_at timestamptz, p_run_token text,
  p_retry_at timestamptz, p_token text
) returns void
language plpgsql as $$
declare
  v_seq integer;
  v_retry boolean := p_retry_at is not null;
begin
  if v_retry and p_token is null then
    raise exception 'a step retried at % needs the token of its resumption', p_retry_at using errcode = '22023';
  end if;
  -- Also locks the record: a new row takes its seq under it.
  insert into jetfn.invocations as i
    (id, function, status, attempts, input, error, errors, enqueued_at, started_at, updated_at, stream_seq,
     retry_of, priority, debounce_key, singleton_key, resume, resume_attempts, wake_at)
  values
    (p_id, p_function, case when v_retry then 'failed' else 'running' end, p_attempt, p_input, p_error,
     pg_catalog.jsonb_build_array(p_error), p_enqueued_at, p_started_at, clock_timestamp(), p_stream_seq,
     p_retry_of, p_priority, p_debounce_key, p_singleton_key, case when v_retry then p_token end,
     case when v_retry then p_attempt - 1 end, p_retry_at)
  on conflict (id) do update set
    -- Without a retry the run goes on: running, unless a later attempt's write is newer.
    status = case when v_retry then 'failed' when i.attempts > excluded.attempts then i.status else 'running' end,
    attempts = greatest(i.attempts, excluded.attempts), error = excluded.error,
    errors = jetfn.append_bounded(i.errors, excluded.error, 20), updated_at = excluded.updated_at,
    resume = case when v_retry then p_token else i.resume end,
    -- Attempts spent so far, whichever run recorded them (a redelivered copy may have counted more).
    resume_attempts = case when v_retry then greatest(i.attempts, p_attempt) - 1 else i.resume_attempts end,
    wake_at = case when v_retry then p_retry_at else i.wake_at end,
    progress = case when v_retry then null else i.progress end,
    priority = coalesce(i.priority, excluded.priority),
    debounce_key = coalesce(i.debounce_key, excluded.debounce_key),
    singleton_key = coalesce(i.singleton_key, excluded.singleton_key)
  where not jetfn.is_final(i.status) and i.function = excluded.function and i.status <> 'sleeping'
    and i.resume is not distinct from p_run_token;
  if not found then
    if exists (select from jetfn.invocations where id = p_id and function <> p_function) then
      raise exception 'invocation id % already belongs to another function than %', p_id, p_function
        using errcode = 'JF002';
    end if;
    if exists (select from jetfn.invocations where id = p_id and not jetfn.is_final(status)) then
      raise exception 'invocation % is asleep, or another run owns it: this run is stale', p_id using errcode = 'JF005';
    end if;
    raise exception 'invocation % has already ended', p_id using errcode = 'JF001';
  end if;

  select coalesce(max(seq), 0) + 1 into v_seq from jetfn.steps where invocation_id = p_id;
  insert into jetfn.steps as s
    (invocation_id, key, seq, kind, status, attempts, error, errors, wake_at, started_at, finished_at, updated_at)
  values
    (p_id, p_key, v_seq, 'step', case when v_retry then 'retrying' else 'failed' end, p_step_attempt, p_error,
     pg_catalog.jsonb_build_array(p_error), p_retry_at, p_step_started_at,
     case when v_retry then null else clock_timestamp() end, clock_timestamp())
  on conflict (invocation_id, key) do update set
    status = excluded.status, attempts = excluded.attempts, error = excluded.error,
    errors = jetfn.append_bounded(s.errors, excluded.error, 20), wake_at = excluded.wake_at,
    finished_at = excluded.finished_at, updated_at = excluded.updated_at
  -- Only the attempt after the last one recorded: a second run of the same attempt lost the race.
  where s.kind = 'step' and s.status = 'retrying' and s.attempts = p_step_attempt - 1;
  if not found then
    raise exception 'step % of invocation % was already recorded', p_key, p_id using errcode = 'JF004';
  end if;
end
$$;

-- As in 0034, but a step's row counts its own attempts; a `retrying` row becomes `succeeded`.
create or replace function jetfn.record_step(
  p_id text, p_function text, p_attempt integer, p_input jsonb,
  p_enqueued_at timestamptz, p_started_at timestamptz, p_stream_seq bigint, p_retry_of text,
  p_priority smallint, p_debounce_key text, p_singleton_key text,
  p_key text, p_result jsonb, p_step_started_at timestamptz, p_run_token text
) returns integer
language plpgsql as $$
declare
  v_seq integer;
begin
  -- Also locks the record: steps of one invocation take their seq one after another.
  insert into jetfn.invocations as i
    (id, function, status, attempts, input, enqueued_at, started_at, updated_at, stream_seq,
     retry_of, priority, debounce_key, singleton_key)
  values
    (p_id, p_function, 'running', p_attempt, p_input, p_enqueued_at, p_started_at, clock_timestamp(),
     p_stream_seq, p_retry_of, p_priority, p_debounce_key, p_singleton_key)
  on conflict (id) do update set
    -- A late step (its commit raced its attempt's end: the attempt is recorded failed, or a later
    -- attempt runs) leaves the record as the later write left it.
    status = case when i.attempts > excluded.attempts or (i.attempts = excluded.attempts and i.status = 'failed')
                  then i.status else 'running' end,
    started_at = case when i.attempts > excluded.attempts or (i.attempts = excluded.attempts and i.status = 'failed')
                      then i.started_at else excluded.started_at end,
    attempts = greatest(i.attempts, excluded.attempts),
    updated_at = excluded.updated_at, priority = coalesce(i.priority, excluded.priority),
    debounce_key = coalesce(i.debounce_key, excluded.debounce_key),
    singleton_key = coalesce(i.singleton_key, excluded.singleton_key)
  where not jetfn.is_final(i.status) and i.function = excluded.function and i.status <> 'sleeping'
    and i.resume is not distinct from p_run_token;
  if not found then
    if exists (select from jetfn.invocations where id = p_id and function <> p_function) then
      raise exception 'invocation id % already belongs to another function than %', p_id, p_function
        using errcode = 'JF002';
    end if;
    if exists (select from jetfn.invocations where id = p_id and not jetfn.is_final(status)) then
      raise exception 'invocation % is asleep, or another run owns it: this run is stale', p_id using errcode = 'JF005';
    end if;
    raise exception 'invocation % has already ended', p_id using errcode = 'JF001';
  end if;

  select coalesce(max(seq), 0) + 1 into v_seq from jetfn.steps where invocation_id = p_id;
  insert into jetfn.steps as s
    (invocation_id, key, seq, kind, status, attempts, result, txid, started_at, finished_at, updated_at)
  values
    (p_id, p_key, v_seq, 'step', 'succeeded', 1, p_result, pg_catalog.txid_current(),
     p_step_started_at, clock_timestamp(), clock_timestamp())
  on conflict (invocation_id, key) do update set
    status = 'succeeded', attempts = s.attempts + 1, result = excluded.result, txid = excluded.txid,
    wake_at = null, started_at = excluded.started_at, finished_at = excluded.finished_at,
    updated_at = excluded.updated_at
  where s.kind = 'step' and s.status = 'retrying'
  returning s.seq into v_seq;
  if not found then
    raise exception 'step % of invocation % was already recorded', p_key, p_id using errcode = 'JF004';
  end if;
  return v_seq;
end
$$;

-- Reopens dead invocation p_id, which recorded steps, for the run of p_token; p_resume is the token
-- the caller read, so two retries at once reopen it once. Returns its function.
create function jetfn.reopen_invocation(p_id text, p_resume text, p_token text) returns text
language plpgsql as $$
declare
  v_function text;
begin
  update jetfn.invocations
  set status = 'queued', resume = p_token, attempts = 0, resume_attempts = 0, wake_at = null, finished_at = null,
      progress = null, updated_at = clock_timestamp()
  where id = p_id and status = 'dead' and retried_as is null and resume is not distinct from p_resume
    and exists (select from jetfn.steps where invocation_id = p_id)
  returning function into v_function;
  if not found then
    raise exception 'invocation % is not a dead job with steps, or was retried meanwhile', p_id using errcode = 'JF007';
  end if;
  update jetfn.steps
  set status = 'retrying', attempts = 0, wake_at = null, finished_at = null, updated_at = clock_timestamp()
  where invocation_id = p_id and kind = 'step' and status in ('failed', 'retrying');
  return v_function;
end
$$;

-- As 0034's five-argument form, for runtimes of this version: p_step_failures says the caller reads
-- `retrying` and `failed` steps.
create function jetfn.resume_invocation(p_id text, p_function text, p_token text, p_delivery integer,
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
      select from jetfn.steps s where s.invocation_id = p_id and s.kind = 'step' and s.status in ('retrying', 'failed')
    ) then
      raise exception 'invocation % has a step that failed: a runtime of a version before migration 0036 cannot run it on', p_id
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

-- The form runtimes of the version before call: it refuses what they would misread.
create or replace function jetfn.resume_invocation(p_id text, p_function text, p_token text, p_delivery integer,
                                                   p_attempt integer)
returns table (outcome text, attempt integer, input jsonb, enqueued_at timestamptz, stream_seq bigint,
               retry_of text, priority smallint, debounce_key text, singleton_key text)
language sql as $$
  select * from jetfn.resume_invocation(p_id, p_function, p_token, p_delivery, p_attempt, false)
$$;

do $$
begin
  if exists (select from pg_catalog.pg_roles where rolname = 'jetfn_runtime') then
    grant execute on function jetfn.resume_invocation(text, text, text, integer, integer, boolean) to jetfn_runtime;
    grant execute on function jetfn.reopen_invocation(text, text, text) to jetfn_runtime;
    grant execute on function jetfn.record_step_failure(text, text, integer, jsonb, timestamptz, timestamptz, bigint,
      text, smallint, text, text, text, integer, jsonb, timestamptz, text, timestamptz, text) to jetfn_runtime;
  end if;
end
$$;
