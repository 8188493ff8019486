-- An invocation id belongs to the function whose record holds it. Before, a job of function B
-- reusing the id of a job of function A was recorded over A's record (or, once A had finished,
-- was acknowledged as "already finished by another attempt"), so B never ran and B's caller was
-- answered with A's result. Now the record of one function is never written by another: the
-- completion raises JF002 instead, which the runtime reports as E_ID_CONFLICT and ends the job
-- with (A's record is left as it was). JF001 keeps its meaning: the same function's job was
-- already finished by another attempt.
--
-- Both functions are 0001's and 0009's with one more condition on the update and the JF002 check;
-- everything else is unchanged.
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
  where i.status not in ('succeeded', 'dead', 'dropped') and i.function = excluded.function;
  if not found then
    if exists (select from jetfn.invocations where id = p_id and function <> p_function) then
      raise exception 'invocation id % already belongs to another function than %', p_id, p_function
        using errcode = 'JF002';
    end if;
    raise exception 'invocation % was already finished by another attempt', p_id using errcode = 'JF001';
  end if;
end
$$;

create or replace function jetfn.complete_invocations(p_records jsonb) returns void
language plpgsql as $$
declare
  recorded integer;
begin
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
  where i.status not in ('succeeded', 'dead', 'dropped') and i.function = excluded.function;
  get diagnostics recorded = row_count;
  if recorded < jsonb_array_length(p_records) then
    -- Either way the shared transaction rolls back and each job runs again alone, where
    -- complete_invocation() tells which job conflicts; the code says why, for the logs.
    if exists (
      select from jetfn.invocations i join jsonb_to_recordset(p_records) as r(id text, function text) on r.id = i.id
      where i.function <> r.function
    ) then
      raise exception 'an invocation id of this group already belongs to another function' using errcode = 'JF002';
    end if;
    raise exception '% of % invocations were already finished by another attempt',
      jsonb_array_length(p_records) - recorded, jsonb_array_length(p_records) using errcode = 'JF001';
  end if;
end
$$;
