-- Durable sleeps (docs/durable-steps.md, "Sleep"): `ctx.sleep(name, duration)` ends the run, and
-- the invocation carries on from its next step when the time comes, in a new run started by a
-- *resumption*: a job message of the function with the headers Jetfn-Id and Jetfn-Resume
-- (`<token>.<tag>`, an HMAC under the runtimes' secret, invocation/resume-tag.ts) and an empty body,
-- parked in the delayed-jobs stream until due.
--
-- 1. jetfn.invocations: status 'sleeping'; `resume`, the one token whose runs may go on with the
--    invocation (null until it first suspends; `<seq>s<n>` for the sleep recorded as step <seq>,
--    set the n-th time); `resume_attempts`, the job attempts spent before that token's first
--    delivery (a resumption's attempt is this plus its delivery count: a sleep spends none);
--    `wake_at`, when a sleeping invocation is due.
-- 2. jetfn.suspend_invocation: the sleep's memo, the record `sleeping` with its token, in one
--    statement with the resumption's outbox row (the runtime wraps it, db/outbox.ts). Fenced as
--    record_step is (JF001, JF002, JF004), and on the run's token: a run whose invocation moved on
--    (another run suspended it, or a newer resumption owns it) writes nothing (JF005).
-- 3. jetfn.resume_invocation: a resumption whose token is the record's makes it `running` (and
--    the sleep it woke from `succeeded`) and gets its attempt and input, in one statement; any other
--    says why it must not run.
-- 4. Only the runs of the record's token write the job's end: the success upserts take the run's
--    token (null for the job's own message) and treat another's as finished (the run is fenced out),
--    as the runtime's failure upsert does (a cancel excepted); record_step takes it too, and refuses
--    another's step (JF005).
-- 5. jetfn.outbox_row_problem accepts a resumption row: id `<function>:<invocation id>:<token>:<digest>`
--    (a hash of the header, not its tag: apps may read outbox ids), headers Jetfn-Id, Jetfn-Resume
--    (`<token>.<tag>`, the same token) and optionally Jetfn-Not-Before and Jetfn-Priority, an empty
--    body. An app may write one; it cannot make a tag that verifies.

alter table jetfn.invocations
  add column resume text,
  add column resume_attempts integer,
  add column wake_at timestamptz,
  drop constraint invocations_status_check,
  -- Not validated here: that reads every record while the table is locked against writes. Every
  -- record has a status the old check allowed; 0035 validates it without blocking writes.
  add constraint invocations_status_check check (status in ('queued', 'running', 'succeeded', 'failed', 'dead',
    'dropped', 'cancelled', 'superseded', 'sleeping')) not valid;

-- Puts the invocation to sleep until p_wake_at, as the last statement of the run that reached the
-- sleep (after the outbox row of its resumption, token p_token). p_run_token is the token of the
-- run itself: null for a run of the job's own message.
create function jetfn.suspend_invocation(
  p_id text, p_function text, p_attempt integer, p_input jsonb,
  p_enqueued_at timestamptz, p_started_at timestamptz, p_stream_seq bigint, p_retry_of text,
  p_priority smallint, p_debounce_key text, p_singleton_key text,
  p_key text, p_wake_at timestamptz, p_token text, p_run_token text
) returns void
language plpgsql as $$
declare
  v_seq integer;
begin
  insert into jetfn.invocations as i
    (id, function, status, attempts, input, enqueued_at, started_at, updated_at, stream_seq,
     retry_of, priority, debounce_key, singleton_key, resume, resume_attempts, wake_at)
  values
    (p_id, p_function, 'sleeping', p_attempt, p_input, p_enqueued_at, p_started_at, clock_timestamp(),
     p_stream_seq, p_retry_of, p_priority, p_debounce_key, p_singleton_key, p_token, p_attempt - 1, p_wake_at)
  on conflict (id) do update set
    status = 'sleeping', attempts = greatest(i.attempts, excluded.attempts), updated_at = excluded.updated_at,
    resume = excluded.resume, resume_attempts = excluded.resume_attempts, wake_at = excluded.wake_at,
    progress = null, priority = coalesce(i.priority, excluded.priority),
    debounce_key = coalesce(i.debounce_key, excluded.debounce_key),
    singleton_key = coalesce(i.singleton_key, excluded.singleton_key)
  where not jetfn.is_final(i.status) and i.function = excluded.function
    and i.resume is not distinct from p_run_token and i.status <> 'sleeping';
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
  -- Numbered under the record's lock, taken above: racing runs cannot take the same seq.
  select coalesce(max(seq), 0) + 1 into v_seq from jetfn.steps where invocation_id = p_id;
  -- A run woken too early suspends again under a new token: the memo stays.
  insert into jetfn.steps (invocation_id, key, seq, kind, status, attempts, wake_at, txid, started_at, updated_at)
  values (p_id, p_key, v_seq, 'sleep', 'sleeping', p_attempt, p_wake_at, pg_catalog.txid_current(),
          clock_timestamp(), clock_timestamp())
  on conflict (invocation_id, key) do nothing;
  if not found and not exists (
    select from jetfn.steps
    where invocation_id = p_id and key = p_key and kind = 'sleep' and status = 'sleeping' and p_run_token is not null
  ) then
    raise exception 'step % of invocation % was already recorded', p_key, p_id using errcode = 'JF004';
  end if;
end
$$;

-- A resumption of token p_token arrived, delivered p_delivery times; its attempt is the attempts
-- spent before it plus those deliveries, or p_attempt when given (a resumption woken after waiting
-- for a limit, which kept its attempt): `run` with its attempt and what the record holds of the job,
-- once the record is `running`; else `ended` (a final record), `foreign` (another function's id),
-- `missing` (no record), or `stale` (another token owns the invocation). Whether its sleep is over is
-- the database's clock's to say (within a second): a sleep still `sleeping` after this is not.
create function jetfn.resume_invocation(p_id text, p_function text, p_token text, p_delivery integer,
                                        p_attempt integer)
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

-- Why a resumption row is not one jetfn publishes (null when it is); `invocation` is what follows
-- "<function>:" in its id. Its tag is checked where it runs: only the runtimes hold the secret.
create function jetfn.resumption_row_problem(invocation text, headers jsonb, body text) returns text
language plpgsql immutable parallel safe as $$
declare
  parts text[] := pg_catalog.regexp_match(invocation collate pg_catalog."C",
    '^([A-Za-z0-9_-]{8,128}):([0-9]{1,9}[a-z][0-9]{0,9}):([A-Za-z0-9_-]{22})$');
begin
  if parts is null
     or pg_catalog.jsonb_typeof(headers) operator(pg_catalog.<>) 'object'
     or (headers operator(pg_catalog.-) '{Jetfn-Not-Before,Jetfn-Priority,Jetfn-Resume}'::text[]) operator(pg_catalog.<>)
          pg_catalog.jsonb_build_object('Jetfn-Id', parts[1])
     or pg_catalog.jsonb_typeof(headers operator(pg_catalog.->) 'Jetfn-Resume') operator(pg_catalog.<>) 'string'
     or ((headers operator(pg_catalog.->>) 'Jetfn-Resume') collate pg_catalog."C")
          operator(pg_catalog.!~) '^[0-9]{1,9}[a-z][0-9]{0,9}\.[A-Za-z0-9_-]{22}$'
     or not pg_catalog.starts_with(headers operator(pg_catalog.->>) 'Jetfn-Resume', parts[2] operator(pg_catalog.||) '.')
     or pg_catalog.jsonb_typeof(headers operator(pg_catalog.->) 'Jetfn-Not-Before') operator(pg_catalog.<>) 'string'
     or pg_catalog.jsonb_typeof(headers operator(pg_catalog.->) 'Jetfn-Priority') operator(pg_catalog.<>) 'string'
     or ((headers operator(pg_catalog.->>) 'Jetfn-Not-Before') collate pg_catalog."C") operator(pg_catalog.!~) '^[0-9]{1,15}$'
     or ((headers operator(pg_catalog.->>) 'Jetfn-Priority') collate pg_catalog."C") operator(pg_catalog.!~) '^[1-3]$' then
    return 'a resumption''s id is "<function name>:<invocation id>:<token>:<digest>", its headers Jetfn-Id, equal to its invocation id, Jetfn-Resume, "<token>.<tag>" (the same token), and optionally Jetfn-Not-Before and Jetfn-Priority';
  end if;
  if body operator(pg_catalog.<>) '' then
    return 'a resumption has an empty body';
  end if;
  return null;
end
$$;

-- A step of a run whose token (p_run_token: null for a run of the job's own message) is not the
-- record's is a stale run's: refused (JF005), as suspend_invocation refuses its sleep.
create function jetfn.record_step(
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
  insert into jetfn.steps
    (invocation_id, key, seq, kind, status, attempts, result, txid, started_at, finished_at, updated_at)
  values
    (p_id, p_key, v_seq, 'step', 'succeeded', p_attempt, p_result, pg_catalog.txid_current(),
     p_step_started_at, clock_timestamp(), clock_timestamp())
  on conflict (invocation_id, key) do nothing;
  if not found then
    raise exception 'step % of invocation % was already recorded', p_key, p_id using errcode = 'JF004';
  end if;
  return v_seq;
end
$$;


-- The form runtimes of the version before call: a run of the job's own message.
create or replace function jetfn.record_step(
  p_id text, p_function text, p_attempt integer, p_input jsonb,
  p_enqueued_at timestamptz, p_started_at timestamptz, p_stream_seq bigint, p_retry_of text,
  p_priority smallint, p_debounce_key text, p_singleton_key text,
  p_key text, p_result jsonb, p_step_started_at timestamptz
) returns integer
language sql as $$
  select jetfn.record_step(p_id, p_function, p_attempt, p_input, p_enqueued_at, p_started_at, p_stream_seq,
                           p_retry_of, p_priority, p_debounce_key, p_singleton_key, p_key, p_result,
                           p_step_started_at, null::text)
$$;


-- The success of a run whose token (p_resume: null for a run of the job's own message) is not the
-- record's: fenced out, as if another attempt had finished the job. Calls without it (every job that
-- never slept, and runtimes of the version before) read as null. A new parameter with a default:
-- the old form goes, or a call would match both.
drop function jetfn.complete_invocation(text, text, integer, jsonb, jsonb, timestamptz, timestamptz, bigint, text,
                                        smallint, text, text);
create function jetfn.complete_invocation(p_id text, p_function text, p_attempt integer, p_input jsonb, p_result jsonb, p_enqueued_at timestamp with time zone, p_started_at timestamp with time zone, p_stream_seq bigint, p_retry_of text, p_priority smallint DEFAULT NULL::smallint, p_debounce_key text DEFAULT NULL::text, p_singleton_key text DEFAULT NULL::text, p_resume text DEFAULT NULL::text) RETURNS void
language plpgsql as $$
begin
  insert into jetfn.invocations as i
    (id, function, status, attempts, input, result, enqueued_at, started_at, finished_at, updated_at, stream_seq,
     retry_of, priority, debounce_key, singleton_key)
  values
    (p_id, p_function, 'succeeded', p_attempt, p_input, p_result, p_enqueued_at, p_started_at, clock_timestamp(),
     clock_timestamp(), p_stream_seq, p_retry_of, p_priority, p_debounce_key, p_singleton_key)
  on conflict (id) do update set
    status = 'succeeded', attempts = greatest(i.attempts, excluded.attempts), result = excluded.result,
    started_at = excluded.started_at, finished_at = excluded.finished_at, updated_at = excluded.updated_at,
    progress = null, priority = coalesce(excluded.priority, i.priority),
    debounce_key = coalesce(excluded.debounce_key, i.debounce_key),
    singleton_key = coalesce(excluded.singleton_key, i.singleton_key)
  where not jetfn.is_final(i.status) and i.function = excluded.function and i.resume is not distinct from p_resume;
  if not found then
    if exists (select from jetfn.invocations where id = p_id and function <> p_function) then
      raise exception 'invocation id % already belongs to another function than %', p_id, p_function
        using errcode = 'JF002';
    end if;
    raise exception 'invocation % was already finished by another attempt, or another run owns it', p_id using errcode = 'JF001';
  end if;
end
$$;


create or replace function jetfn.record_successes(p_records jsonb) RETURNS SETOF text
language plpgsql as $$
begin
  return query
  with recorded as (
    insert into jetfn.invocations as i
      (id, function, status, attempts, input, result, enqueued_at, started_at, finished_at, updated_at, stream_seq,
       retry_of, priority, debounce_key, singleton_key, resume)
    select r.id, r.function, 'succeeded', r.attempts, r.input, r.result, r.enqueued_at, r.started_at, r.finished_at,
           clock_timestamp(), r.stream_seq, r.retry_of, r.priority, r.debounce_key, r.singleton_key, r.resume
    from jsonb_to_recordset(p_records) as r(
      id text, function text, attempts integer, input jsonb, result jsonb,
      enqueued_at timestamptz, started_at timestamptz, finished_at timestamptz, stream_seq bigint, retry_of text,
      priority smallint, debounce_key text, singleton_key text, resume text)
    on conflict (id) do update set
      status = 'succeeded', attempts = greatest(i.attempts, excluded.attempts), result = excluded.result,
      started_at = excluded.started_at, finished_at = excluded.finished_at, updated_at = excluded.updated_at,
      progress = null, priority = coalesce(excluded.priority, i.priority),
      debounce_key = coalesce(excluded.debounce_key, i.debounce_key),
      singleton_key = coalesce(excluded.singleton_key, i.singleton_key)
    where not jetfn.is_final(i.status) and i.function = excluded.function and i.resume is not distinct from excluded.resume
    returning i.id
  )
  select recorded.id from recorded;
end
$$;


-- Resumption rows.
create or replace function jetfn.outbox_row_problem(id text, subject text, headers jsonb, body text) returns text
language plpgsql immutable parallel safe as $$
declare
  invocation text;
  singleton text;
  debounce text;
  period text;
  max_wait text;
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
    if headers operator(pg_catalog.?) 'Jetfn-Resume' then
      return jetfn.resumption_row_problem(pg_catalog.substr(id, pg_catalog.char_length(subject) operator(pg_catalog.-) 5),
                                          headers, body);
    end if;
    invocation := pg_catalog.substr(id, pg_catalog.char_length(subject) operator(pg_catalog.-) 5);
    if (invocation collate pg_catalog."C") operator(pg_catalog.!~) '^[A-Za-z0-9_-]+$'
       or pg_catalog.char_length(invocation) not between 8 and 128 then
      return 'a job''s invocation id must be 8-128 letters, digits, "-" or "_"';
    end if;
    if headers operator(pg_catalog.=) '{}'::pg_catalog.jsonb
       or headers operator(pg_catalog.=) pg_catalog.jsonb_build_object('Jetfn-Id', invocation) then
      return null;
    end if;
    -- Not an object (a string, an array): deleting keys from it would raise instead of naming the rule.
    if pg_catalog.jsonb_typeof(headers) operator(pg_catalog.<>) 'object' then
      return 'a job''s headers are a JSON object';
    end if;
    if (headers operator(pg_catalog.-) '{Jetfn-Not-Before,Jetfn-Priority,Jetfn-Singleton-Key,Jetfn-Debounce-Key,Jetfn-Debounce-Period,Jetfn-Debounce-Max-Wait}'::text[])
         operator(pg_catalog.<>) pg_catalog.jsonb_build_object('Jetfn-Id', invocation)
       or pg_catalog.jsonb_typeof(headers operator(pg_catalog.->) 'Jetfn-Not-Before') operator(pg_catalog.<>) 'string'
       or pg_catalog.jsonb_typeof(headers operator(pg_catalog.->) 'Jetfn-Priority') operator(pg_catalog.<>) 'string'
       or pg_catalog.jsonb_typeof(headers operator(pg_catalog.->) 'Jetfn-Singleton-Key') operator(pg_catalog.<>) 'string'
       or pg_catalog.jsonb_typeof(headers operator(pg_catalog.->) 'Jetfn-Debounce-Key') operator(pg_catalog.<>) 'string'
       or pg_catalog.jsonb_typeof(headers operator(pg_catalog.->) 'Jetfn-Debounce-Period') operator(pg_catalog.<>) 'string'
       or pg_catalog.jsonb_typeof(headers operator(pg_catalog.->) 'Jetfn-Debounce-Max-Wait') operator(pg_catalog.<>) 'string'
       or ((headers operator(pg_catalog.->>) 'Jetfn-Not-Before') collate pg_catalog."C")
            operator(pg_catalog.!~) '^[0-9]{1,15}$'
       or ((headers operator(pg_catalog.->>) 'Jetfn-Priority') collate pg_catalog."C")
            operator(pg_catalog.!~) '^[1-3]$' then
      return 'a job''s headers are Jetfn-Id, equal to its invocation id, and optionally Jetfn-Not-Before, its due time in epoch milliseconds, Jetfn-Priority, 1 to 3, and a key: Jetfn-Singleton-Key, or Jetfn-Debounce-Key with Jetfn-Debounce-Period and optionally Jetfn-Debounce-Max-Wait';
    end if;
    singleton := headers operator(pg_catalog.->>) 'Jetfn-Singleton-Key';
    debounce := headers operator(pg_catalog.->>) 'Jetfn-Debounce-Key';
    period := headers operator(pg_catalog.->>) 'Jetfn-Debounce-Period';
    max_wait := headers operator(pg_catalog.->>) 'Jetfn-Debounce-Max-Wait';
    if singleton is not null and debounce is not null then
      return 'a job has a singleton key or a debounce key, not both';
    end if;
    if debounce is null and (period is not null or max_wait is not null) then
      return 'Jetfn-Debounce-Period and Jetfn-Debounce-Max-Wait need Jetfn-Debounce-Key';
    end if;
    if (coalesce(singleton, debounce) collate pg_catalog."C") operator(pg_catalog.!~) '^[A-Za-z0-9_.:@/+=-]+$'
       or pg_catalog.char_length(coalesce(singleton, debounce)) operator(pg_catalog.>) 128 then
      return 'a singleton or debounce key is 1-128 letters, digits or _ - . : @ / + =';
    end if;
    if debounce is null then
      return null;
    end if;
    if headers operator(pg_catalog.?) 'Jetfn-Not-Before' then
      return 'a debounced job takes no Jetfn-Not-Before';
    end if;
    -- Cast only once the pattern matched: an OR does not promise to stop at its first true operand.
    if period is null or (period collate pg_catalog."C") operator(pg_catalog.!~) '^[0-9]{1,8}$' then
      return 'a debounced job needs Jetfn-Debounce-Period, 100 to 86400000 milliseconds';
    end if;
    if period::pg_catalog.int8 not between 100 and 86400000 then
      return 'a debounced job needs Jetfn-Debounce-Period, 100 to 86400000 milliseconds';
    end if;
    if max_wait is null then
      return null;
    end if;
    if (max_wait collate pg_catalog."C") operator(pg_catalog.!~) '^[0-9]{1,8}$' then
      return 'Jetfn-Debounce-Max-Wait is milliseconds, from the period to 86400000';
    end if;
    if max_wait::pg_catalog.int8 not between period::pg_catalog.int8 and 86400000 then
      return 'Jetfn-Debounce-Max-Wait is milliseconds, from the period to 86400000';
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

-- Where the runtime's role exists (schema/roles.sql), it may call what this migration made even in
-- a database that revoked EXECUTE from PUBLIC (complete_invocation was made anew).
do $$
begin
  if exists (select from pg_catalog.pg_roles where rolname = 'jetfn_runtime') then
    grant execute on function jetfn.complete_invocation(text, text, integer, jsonb, jsonb, timestamptz, timestamptz,
      bigint, text, smallint, text, text, text) to jetfn_runtime;
    grant execute on function jetfn.suspend_invocation(text, text, integer, jsonb, timestamptz, timestamptz, bigint,
      text, smallint, text, text, text, timestamptz, text, text) to jetfn_runtime;
    grant execute on function jetfn.resume_invocation(text, text, text, integer, integer) to jetfn_runtime;
    grant execute on function jetfn.record_step(text, text, integer, jsonb, timestamptz, timestamptz, bigint, text,
      smallint, text, text, text, jsonb, timestamptz, text) to jetfn_runtime;
  end if;
end
$$;
