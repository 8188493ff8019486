-- Audit reads that stay fast on a large log (issue 3, items 6 and 8). Measured on 1M rows
-- (bench scenario "audit-reads"): a row's history took about 450 ms, the latest 50 changes 70 ms,
-- growing with the log.
--  * The unsealed tail was read with a condition on txid whose bound comes from a subquery, so
--    the planner guessed a third of the log and scanned all of it instead of using the BRIN index.
--    jetfn.audit_tail (a view over a function planned without sequential scans) reads it through
--    the BRIN index: the block ranges the sealer has not passed yet.
--  * Newest-first listings ordered the whole log by id. Every listing now reads sealed rows from
--    jetfn.audit_lookup, which gets a b-tree on id, and one on (function, id) for --function (the
--    sealer writes the lookup, off the write path).
--  * BRIN ranges waited for autovacuum to be summarized, and a new partition for its statistics;
--    until then queries read them whole. jetfn.summarize_audit_ranges() does both after each
--    sealing round.
--  * A seal is also bounded in bytes (jetfn.seal_audit's max_bytes), now that the sealer's batches
--    grow while it catches up.

create index audit_lookup_id_idx on jetfn.audit_lookup (id);
drop index jetfn.audit_lookup_function_idx;
create index audit_lookup_function_idx on jetfn.audit_lookup (function, id) where function is not null;

-- Rows after the last seal. The SET keeps it on the BRIN index whatever the planner guesses (the
-- clause also keeps the function from being inlined, so it is planned on its own).
create function jetfn.audit_tail_rows() returns setof jetfn.audit_log
language sql stable set enable_seqscan = off as $$
  select l.* from jetfn.audit_log l
  where l.txid >= (select txid from jetfn.audit_sealed_through())
    and (l.txid, l.id) > (select txid, id from jetfn.audit_sealed_through())
$$;

create view jetfn.audit_tail as select * from jetfn.audit_tail_rows();

-- Summarizes the BRIN block ranges of the log that are full and not summarized yet; returns how
-- many. The sealer calls it after each round: the tail and sealed rows are found through these
-- summaries, and autovacuum (autosummarize) gets to them only on its next run, a minute or more
-- later, while an unsummarized range is read whole by every query. The range being filled is left
-- alone, so writers never widen a summary row by row. A partition that has no statistics yet (a new
-- month) is analyzed once: without them the planner prices the BRIN index as useless and scans the
-- whole partition (autovacuum keeps them up to date from then on). A partition busy with
-- (auto)vacuum is skipped this round rather than waited for.
create function jetfn.summarize_audit_ranges() returns integer
language plpgsql security definer set search_path = pg_catalog, jetfn set lock_timeout = '100ms' as $$
declare
  part record;
  block bigint;
  total integer := 0;
  summarized integer;
  found_ranges integer;
begin
  for part in
    select i.indexrelid::regclass as index, h.inhrelid::regclass as heap, c.relname as heap_name,
           coalesce((select o.option_value::integer from pg_options_to_table(ic.reloptions) o
                     where o.option_name = 'pages_per_range'), 128) as pages_per_range
    from pg_inherits h
    join pg_class c on c.oid = h.inhrelid
    join pg_index i on i.indrelid = h.inhrelid
    join pg_class ic on ic.oid = i.indexrelid
    join pg_am a on a.oid = ic.relam and a.amname = 'brin'
    where h.inhparent = 'jetfn.audit_log'::regclass
  loop
    -- From the last full range back to the first one already summarized.
    block := (pg_relation_size(part.heap) / current_setting('block_size')::bigint / part.pages_per_range - 1)
             * part.pages_per_range;
    found_ranges := 0;
    begin
      while block >= 0 loop
        summarized := brin_summarize_range(part.index, block);
        exit when summarized = 0;
        found_ranges := found_ranges + summarized;
        block := block - part.pages_per_range;
      end loop;
      if found_ranges > 0 and not exists (
        select 1 from pg_stats s where s.schemaname = 'jetfn' and s.tablename = part.heap_name
      ) then
        execute format('analyze %s', part.heap);
      end if;
    exception when lock_not_available then
      null;
    end;
    total := total + found_ranges;
  end loop;
  return total;
end
$$;

-- Seals are bounded in bytes as well as rows. A seal hashes its rows' text as one string, and a
-- value cannot exceed 1 GB: 10,000 rows of 100 KB of JSON made a batch that could never be sealed,
-- and the sealer's growing batches (up to 100,000 rows) make big rows more likely to hit it. A batch
-- now ends at the row that takes it past `max_bytes` of stored row data (64 MB; stored JSON may be
-- compressed, a few times smaller than its text). As in 0008 otherwise.
drop function jetfn.seal_audit(integer);
create function jetfn.seal_audit(max_rows integer default 10000, max_bytes bigint default 67108864) returns integer
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
    select l.txid, l.id, coalesce(sum(l.size) over (order by l.txid, l.id rows between unbounded preceding and 1 preceding), 0) as before
    from (
      select l.txid, l.id, coalesce(pg_column_size(l.old_row), 0) + coalesce(pg_column_size(l.new_row), 0) + 256 as size
      from jetfn.audit_log l
      where l.txid >= previous.last_txid and l.txid < horizon
        and (l.txid, l.id) > (previous.last_txid, previous.last_id)
      order by l.txid, l.id
      limit max_rows
    ) l
  ) l
  -- Up to the row that crosses the byte budget (so at least one row, however big).
  where l.before < max_bytes
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
  insert into jetfn.audit_lookup (id, txid, logged_at, function, invocation_id, schema_name, table_name, pk)
  select l.id, l.txid, l.logged_at, l.function, l.invocation_id, l.schema_name, l.table_name, l.pk::jsonb
  from jetfn.audit_log l
  where l.txid >= previous.last_txid and l.txid <= last_row.txid
    and (l.txid, l.id) > (previous.last_txid, previous.last_id) and (l.txid, l.id) <= (last_row.txid, last_row.id);
  return sealed.row_count;
end
$$;
