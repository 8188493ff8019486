-- The upsert that records successful attempts was written twice: in complete_invocations() (a
-- group's jobs, before its COMMIT) and in the runtime's batched success recorder (jobs that wrote
-- nothing, invocation-store.ts). Both now call record_successes(), which returns the ids it
-- recorded; complete_invocations() keeps its fence (JF001/JF002 when not every job was recorded).
--
-- p_records is a JSON array of objects shaped like the success batch's rows (invocation-store.ts).
-- A job already final, or whose id belongs to another function, is left as it is and not returned.
create function jetfn.record_successes(p_records jsonb) returns setof text
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
    where i.status not in ('succeeded', 'dead', 'dropped', 'cancelled') and i.function = excluded.function
    returning i.id
  )
  select recorded.id from recorded;
end
$$;

create or replace function jetfn.complete_invocations(p_records jsonb) returns void
language plpgsql as $$
declare
  recorded integer;
begin
  select count(*) into recorded from jetfn.record_successes(p_records);
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
