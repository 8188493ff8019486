-- What a job was enqueued with, kept on its record so `jetfn status` shows it in every state
-- (docs/flow-control-keys-and-priority.md): its priority (1-3; null is the default, 0) and its
-- debounce or singleton key. They come from the job's message (its subject and headers) and are
-- written with the record the runtime already writes, a failed attempt's or the success; a job
-- without them writes nulls, which cost no bytes in its row. A later write keeps what an earlier
-- one stored when it has nothing itself.
alter table jetfn.invocations
  add column priority smallint,
  add column debounce_key text,
  add column singleton_key text;

-- complete_invocation() takes the three as optional trailing parameters: its call without them
-- (a job with none, or a runtime of the version before) stays the same statement.
drop function jetfn.complete_invocation(text, text, integer, jsonb, jsonb, timestamptz, timestamptz, bigint, text);

create function jetfn.complete_invocation(
  p_id text, p_function text, p_attempt integer, p_input jsonb, p_result jsonb,
  p_enqueued_at timestamptz, p_started_at timestamptz, p_stream_seq bigint, p_retry_of text,
  p_priority smallint default null, p_debounce_key text default null, p_singleton_key text default null
) returns void
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

-- The rows may carry "priority", "debounce_key" and "singleton_key"; a row without them (most)
-- reads nulls.
create or replace function jetfn.record_successes(p_records jsonb) returns setof text
language plpgsql as $$
begin
  return query
  with recorded as (
    insert into jetfn.invocations as i
      (id, function, status, attempts, input, result, enqueued_at, started_at, finished_at, updated_at, stream_seq,
       retry_of, priority, debounce_key, singleton_key)
    select r.id, r.function, 'succeeded', r.attempts, r.input, r.result, r.enqueued_at, r.started_at, r.finished_at,
           clock_timestamp(), r.stream_seq, r.retry_of, r.priority, r.debounce_key, r.singleton_key
    from jsonb_to_recordset(p_records) as r(
      id text, function text, attempts integer, input jsonb, result jsonb,
      enqueued_at timestamptz, started_at timestamptz, finished_at timestamptz, stream_seq bigint, retry_of text,
      priority smallint, debounce_key text, singleton_key text)
    on conflict (id) do update set
      status = 'succeeded', attempts = greatest(i.attempts, excluded.attempts), result = excluded.result,
      started_at = excluded.started_at, finished_at = excluded.finished_at, updated_at = excluded.updated_at,
      progress = null, priority = coalesce(excluded.priority, i.priority),
      debounce_key = coalesce(excluded.debounce_key, i.debounce_key),
      singleton_key = coalesce(excluded.singleton_key, i.singleton_key)
    where not jetfn.is_final(i.status) and i.function = excluded.function
    returning i.id
  )
  select recorded.id from recorded;
end
$$;
