-- Lookup indexes off the write path (issue 3, item 6). The hash index on pk and the partial
-- indexes on invocation_id and (function, logged_at) cost every audited write an index insert
-- each. They move to jetfn.audit_lookup, filled by the sealer as it seals: a sealed row is indexed
-- in the same transaction as its seal. Queries read the lookup for sealed rows and scan the
-- unsealed tail (rows after the last seal, found through the BRIN index on txid), which sealing
-- keeps to a few seconds of writes.

create table jetfn.audit_lookup (
  id            bigint not null,
  logged_at     timestamptz not null,
  function      text,
  invocation_id text,
  schema_name   text not null,
  table_name    text not null,
  pk            jsonb
);

create index audit_lookup_invocation_idx on jetfn.audit_lookup (invocation_id) where invocation_id is not null;
create index audit_lookup_function_idx on jetfn.audit_lookup (function, logged_at) where function is not null;
create index audit_lookup_row_idx on jetfn.audit_lookup using hash (pk);
-- Pruning deletes by time.
create index audit_lookup_time_brin on jetfn.audit_lookup using brin (logged_at);

-- Where sealing (and so the lookup) has got to: rows with (txid, id) above it are the unsealed tail.
create function jetfn.audit_sealed_through(out txid bigint, out id bigint)
language sql stable as $$
  select coalesce(max(s.last_txid), 0), coalesce(max(s.last_id), 0)
  from jetfn.audit_seals s where s.seq = (select max(seq) from jetfn.audit_seals)
$$;

-- Rows already sealed before this migration.
insert into jetfn.audit_lookup (id, logged_at, function, invocation_id, schema_name, table_name, pk)
select l.id, l.logged_at, l.function, l.invocation_id, l.schema_name, l.table_name, l.pk
from jetfn.audit_log l, jetfn.audit_sealed_through() h
where l.txid <= h.txid and (l.txid, l.id) <= (h.txid, h.id);

drop index jetfn.audit_log_row_idx;
drop index jetfn.audit_log_invocation_idx;
drop index jetfn.audit_log_function_idx;

-- As in 0005, and the sealed rows go into the lookup with their seal.
create or replace function jetfn.seal_audit(max_rows integer default 10000) returns integer
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
  insert into jetfn.audit_lookup (id, logged_at, function, invocation_id, schema_name, table_name, pk)
  select l.id, l.logged_at, l.function, l.invocation_id, l.schema_name, l.table_name, l.pk
  from jetfn.audit_log l
  where l.txid >= previous.last_txid and l.txid <= last_row.txid
    and (l.txid, l.id) > (previous.last_txid, previous.last_id) and (l.txid, l.id) <= (last_row.txid, last_row.id);
  return sealed.row_count;
end
$$;

-- As in 0005, and the lookup entries of a dropped month go with it.
create or replace function jetfn.prune_audit(keep interval) returns setof text
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
    delete from jetfn.audit_lookup k where k.logged_at < boundary;
    execute format('drop table jetfn.%I', part.name);
    return next part.name;
  end loop;
end
$$;
