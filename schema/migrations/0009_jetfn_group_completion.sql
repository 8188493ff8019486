-- Records the successful attempts of the jobs sharing one transaction (group commit) in one
-- statement, sent just before the COMMIT, instead of one complete_invocation() call per job. Per
-- job, that call cost Postgres about a fifth of its CPU on an insert job: a statement parsed from
-- literals, a plpgsql call, and an upsert whose executor (and CHECK constraint) was set up anew.
--
-- Fenced like complete_invocation(): if any of the jobs was already finished by another attempt (or
-- declared dead), it raises JF001 and the shared transaction rolls back; each of its jobs then runs
-- again alone, where complete_invocation() settles which attempt counts. The same job twice in one
-- group (ON CONFLICT cannot touch a row twice) ends the same way.
--
-- p_records is a JSON array of objects shaped like the success batch's rows (invocation-store.ts).
create function jetfn.complete_invocations(p_records jsonb) returns void
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
  where i.status not in ('succeeded', 'dead', 'dropped');
  get diagnostics recorded = row_count;
  if recorded < jsonb_array_length(p_records) then
    raise exception '% of % invocations were already finished by another attempt',
      jsonb_array_length(p_records) - recorded, jsonb_array_length(p_records) using errcode = 'JF001';
  end if;
end
$$;
