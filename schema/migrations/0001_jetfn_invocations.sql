-- jetfn's own tables live in schema jetfn; the app's tables stay in public (or the configured schemas).
create schema if not exists jetfn;

-- One row per job invocation (the job's handle). Written in the same transaction as the
-- handler's writes on success, and on its own after a failed attempt.
create table jetfn.invocations (
  id            text primary key,
  function      text not null,
  status        text not null check (status in ('queued', 'running', 'succeeded', 'failed', 'dead', 'dropped')),
  attempts      integer not null default 0,
  input         jsonb,
  result        jsonb,
  error         jsonb,
  errors        jsonb not null default '[]'::jsonb,
  progress      jsonb,
  enqueued_at   timestamptz,
  started_at    timestamptz,
  finished_at   timestamptz,
  updated_at    timestamptz not null default clock_timestamp(),
  stream_seq    bigint,
  retry_of      text
);

-- Dead letters are listed by function, newest first.
create index invocations_dead_idx on jetfn.invocations (function, finished_at desc) where status = 'dead';
-- Retention prunes by age; rows arrive roughly in time order, so a BRIN index is enough.
create index invocations_finished_brin on jetfn.invocations using brin (finished_at);

-- Appends `item` to a jsonb array, keeping only the newest `keep` entries.
create function jetfn.append_bounded(items jsonb, item jsonb, keep integer) returns jsonb
language sql immutable as $$
  select coalesce(jsonb_agg(entry order by position), '[]'::jsonb)
  from (
    select entry, position
    from jsonb_array_elements(coalesce(items, '[]'::jsonb) || jsonb_build_array(item)) with ordinality as t(entry, position)
    order by position desc
    limit keep
  ) newest
$$;

-- Records a successful attempt. Called inside the handler's transaction, just before COMMIT.
-- Fencing: if another attempt already finished the job (or it was declared dead), this raises
-- JF001 so the transaction rolls back and at most one attempt's writes ever commit.
create function jetfn.complete_invocation(
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
  where i.status not in ('succeeded', 'dead', 'dropped');
  if not found then
    raise exception 'invocation % was already finished by another attempt', p_id using errcode = 'JF001';
  end if;
end
$$;
