-- Tamper evidence: committed audit rows are sealed, in the background and in batches, into a hash
-- chain. Writers never wait for it: a seal only covers rows whose transaction ended before the
-- oldest transaction still running began (txid below the snapshot's xmin), so no row can later
-- join a range that is already sealed, even one with a lower id that commits late.

-- Seals walk the log in (txid, id) order; a BRIN index keeps that cheap for writers.
create index audit_log_txid_brin on jetfn.audit_log using brin (txid);

create table jetfn.audit_seals (
  seq           bigint primary key,
  sealed_at     timestamptz not null default clock_timestamp(),
  -- Covers rows with (txid, id) > (after_txid, after_id) and <= (last_txid, last_id).
  after_txid    bigint not null,
  after_id      bigint not null,
  last_txid     bigint not null,
  last_id       bigint not null,
  row_count     integer not null,
  first_logged_at timestamptz not null,
  last_logged_at  timestamptz not null,
  previous_hash text not null,
  hash          text not null
);

-- Where the chain starts again after old seals were pruned with their rows.
create table jetfn.audit_anchors (
  seq           bigint primary key,
  anchored_at   timestamptz not null default clock_timestamp(),
  -- The hash the first remaining seal must chain from.
  hash          text not null,
  reason        text not null
);

-- The canonical text of one audit row, as hashed (independent of the session's time zone).
create function jetfn.audit_row_text(r jetfn.audit_log) returns text
language sql immutable as $$
  select concat_ws('|', r.id, (extract(epoch from r.logged_at) * 1000000)::bigint, r.txid, r.function,
                   r.invocation_id, r.attempt, r.db_user, r.schema_name, r.table_name, r.operation,
                   r.pk::text, r.old_row::text, r.new_row::text, r.changed_columns::text)
$$;

-- The hash a seal gets: its predecessor's hash followed by its rows, in (txid, id) order.
create function jetfn.audit_range_hash(previous_hash text, after_txid bigint, after_id bigint, last_txid bigint, last_id bigint)
returns table (hash text, row_count integer)
language sql stable as $$
  select encode(sha256(convert_to(previous_hash || coalesce(string_agg(jetfn.audit_row_text(l), E'\n' order by l.txid, l.id), ''), 'UTF8')), 'hex'),
         count(*)::integer
  from jetfn.audit_log l
  where l.txid >= after_txid and l.txid <= last_txid
    and (l.txid, l.id) > (after_txid, after_id) and (l.txid, l.id) <= (last_txid, last_id)
$$;

-- Seals up to `max_rows` settled rows; returns how many. One sealer at a time (advisory lock);
-- a second caller returns 0 at once instead of waiting.
create function jetfn.seal_audit(max_rows integer default 10000) returns integer
language plpgsql security definer set search_path = pg_catalog, jetfn as $$
declare
  horizon bigint := pg_snapshot_xmin(pg_current_snapshot())::text::bigint;
  previous jetfn.audit_seals;
  start_hash text;
  last_row record;
  sealed record;
begin
  if not pg_try_advisory_xact_lock(7423002) then
    return 0;
  end if;
  select * into previous from jetfn.audit_seals order by seq desc limit 1;
  if previous.seq is null then
    select a.hash into start_hash from jetfn.audit_anchors a order by a.seq desc limit 1;
    start_hash := coalesce(start_hash, 'genesis');
    previous.seq := coalesce((select max(a.seq) from jetfn.audit_anchors a), 0);
    previous.last_txid := 0;
    previous.last_id := 0;
    previous.hash := start_hash;
  end if;
  select l.txid, l.id into last_row
  from (
    select l.txid, l.id from jetfn.audit_log l
    where l.txid >= previous.last_txid and l.txid < horizon
      and (l.txid, l.id) > (previous.last_txid, previous.last_id)
    order by l.txid, l.id
    limit max_rows
  ) l
  order by l.txid desc, l.id desc
  limit 1;
  if last_row.txid is null then
    return 0;
  end if;
  select * into sealed from jetfn.audit_range_hash(previous.hash, previous.last_txid, previous.last_id, last_row.txid, last_row.id);
  insert into jetfn.audit_seals
    (seq, after_txid, after_id, last_txid, last_id, row_count, first_logged_at, last_logged_at, previous_hash, hash)
  select previous.seq + 1, previous.last_txid, previous.last_id, last_row.txid, last_row.id, sealed.row_count,
         min(l.logged_at), max(l.logged_at), previous.hash, sealed.hash
  from jetfn.audit_log l
  where l.txid >= previous.last_txid and l.txid <= last_row.txid
    and (l.txid, l.id) > (previous.last_txid, previous.last_id) and (l.txid, l.id) <= (last_row.txid, last_row.id);
  return sealed.row_count;
end
$$;

-- Rows not sealed yet and the age of the oldest: how far sealing lags.
create function jetfn.audit_seal_lag(out unsealed_rows bigint, out oldest_unsealed timestamptz)
language sql stable security definer set search_path = pg_catalog, jetfn as $$
  with head as (select coalesce(max(last_txid), 0) as txid, coalesce(max(last_id), 0) as id
                from jetfn.audit_seals where seq = (select max(seq) from jetfn.audit_seals))
  select count(*), min(l.logged_at)
  from jetfn.audit_log l, head
  where l.txid >= head.txid and (l.txid, l.id) > (head.txid, head.id)
$$;

-- Checks every seal against the rows it covers and against its predecessor. Returns nothing
-- when the chain is intact, else the first broken seal and what is wrong with it.
create function jetfn.verify_audit()
returns table (seq bigint, problem text, expected_rows integer, found_rows integer, expected_hash text, found_hash text)
language plpgsql stable security definer set search_path = pg_catalog, jetfn as $$
declare
  seal jetfn.audit_seals;
  expected_previous text;
  recomputed record;
begin
  select a.hash into expected_previous from jetfn.audit_anchors a order by a.seq desc limit 1;
  expected_previous := coalesce(expected_previous, 'genesis');
  for seal in select * from jetfn.audit_seals s order by s.seq loop
    if seal.previous_hash <> expected_previous then
      return query select seal.seq, 'the seal does not chain from the previous one (a seal was altered or removed)',
                          seal.row_count, null::integer, expected_previous, seal.previous_hash;
      return;
    end if;
    select * into recomputed from jetfn.audit_range_hash(seal.previous_hash, seal.after_txid, seal.after_id, seal.last_txid, seal.last_id);
    if recomputed.hash <> seal.hash then
      return query select seal.seq,
        case when recomputed.row_count < seal.row_count then 'audit rows were deleted'
             when recomputed.row_count > seal.row_count then 'audit rows were added'
             else 'audit rows were altered' end,
        seal.row_count, recomputed.row_count, seal.hash, recomputed.hash;
      return;
    end if;
    expected_previous := seal.hash;
  end loop;
end
$$;

-- Drops whole monthly partitions older than `keep`, when every row in them is sealed and no seal
-- reaches across the boundary; their seals go too and an anchor records where the chain resumes.
-- Returns the partitions dropped.
create function jetfn.prune_audit(keep interval) returns setof text
language plpgsql security definer set search_path = pg_catalog, jetfn as $$
declare
  part record;
  boundary timestamptz;
  last_pruned jetfn.audit_seals;
begin
  for part in
    select c.relname::text as name,
           (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \(''([^'']+)''\)'))[1]::timestamptz as upper_bound
    from pg_inherits i
    join pg_class c on c.oid = i.inhrelid
    where i.inhparent = 'jetfn.audit_log'::regclass and c.relname <> 'audit_log_default'
    order by 2
  loop
    boundary := part.upper_bound;
    exit when boundary is null or boundary > now() - keep;
    -- Every row before the boundary must be sealed, and no seal may straddle it.
    exit when exists (select 1 from jetfn.audit_seals s where s.first_logged_at < boundary and s.last_logged_at >= boundary);
    exit when (select oldest_unsealed from jetfn.audit_seal_lag()) < boundary;
    select * into last_pruned from jetfn.audit_seals s where s.last_logged_at < boundary order by s.seq desc limit 1;
    if last_pruned.seq is not null then
      insert into jetfn.audit_anchors (seq, hash, reason)
      values (last_pruned.seq, last_pruned.hash, format('pruned %s (rows before %s)', part.name, boundary))
      on conflict (seq) do nothing;
      delete from jetfn.audit_seals s where s.seq <= last_pruned.seq;
    end if;
    execute format('drop table jetfn.%I', part.name);
    return next part.name;
  end loop;
end
$$;
