-- Durable steps (docs/durable-steps.md): `ctx.step(name, fn)` runs `fn` once per invocation. Its
-- result (the memo) commits in the step's own transaction, with the step's writes, so a later run
-- of the job (a retry, a redelivery after a crash) reads the memo instead of running the step again.
--
-- One row per step reached, keyed by the step's key (its name, `name#2` for its second call in a
-- run). The columns for sleeps and waits are here already, so that those kinds need no change of
-- the table; this version records kind 'step' only.
create table jetfn.steps (
  invocation_id text not null references jetfn.invocations (id) on delete cascade,
  key text not null,                  -- name, or name#n for its n-th call in a run
  seq integer not null,               -- 1, 2, ... in the order first recorded
  kind text not null check (kind in ('step', 'sleep', 'wait', 'patch')),
  status text not null check (status in ('retrying', 'succeeded', 'failed', 'sleeping',
    'waiting', 'matched', 'timed_out')),
  attempts integer not null default 0,
  result jsonb,                       -- step: its value; wait: the event; patch: true or false
  error jsonb,
  errors jsonb not null default '[]',
  wake_at timestamptz,                -- sleep: its end; wait: its timeout; retrying: next attempt
  event text,
  match_paths text[],
  match_values jsonb,
  after_at timestamptz,
  event_id text,
  code_version text,                  -- the build that ran it, when known
  txid bigint,                        -- the transaction that committed it
  started_at timestamptz,
  finished_at timestamptz,
  updated_at timestamptz not null default clock_timestamp(),
  primary key (invocation_id, key),
  unique (invocation_id, seq)
);

-- Records a step that succeeded, as the last statement of its transaction. The invocation's record
-- is made if there is none yet (status 'running', with what `complete_invocation` would write of
-- the job), so the memo has its record and the job shows as running. Fenced like a job's record:
--   JF002  the id belongs to another function's invocation;
--   JF001  the invocation already ended (succeeded, dead, cancelled...): nothing more is written;
--   JF004  the step is recorded already: another run of the invocation committed it first.
-- Returns the step's seq.
create function jetfn.record_step(
  p_id text, p_function text, p_attempt integer, p_input jsonb,
  p_enqueued_at timestamptz, p_started_at timestamptz, p_stream_seq bigint, p_retry_of text,
  p_priority smallint, p_debounce_key text, p_singleton_key text,
  p_key text, p_result jsonb, p_step_started_at timestamptz
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
  where not jetfn.is_final(i.status) and i.function = excluded.function;
  if not found then
    if exists (select from jetfn.invocations where id = p_id and function <> p_function) then
      raise exception 'invocation id % already belongs to another function than %', p_id, p_function
        using errcode = 'JF002';
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
