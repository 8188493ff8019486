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
