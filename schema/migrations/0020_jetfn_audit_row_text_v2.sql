-- Seals of format 2: an unambiguous text per audit row.
--
-- Format 1 (jetfn.audit_row_text) joins a row's fields with concat_ws('|', ...), which skips NULLs,
-- so two different rows can give the same text: a row with function, invocation id and attempt
-- set, and one with those NULL and their values moved into db_user ('f|inv|1|jetfn_runtime'), hash
-- alike. Format 2 is the row's fields as a Postgres record literal (ROW(...)::text, record_out): a
-- NULL is an empty field, and a value is double-quoted, with '"' and '\' doubled, whenever it is
-- empty or holds a comma, quote, backslash, parenthesis or white space. So an empty string ("")
-- differs from NULL, and no value can spill into its neighbour: the text reads back into exactly
-- one row. (Length-prefixing every field was also unambiguous, but hashing 100,000 rows took
-- 1.5-1.9 times as long as format 1; the record literal, built in C, takes about 1.2 times.)
--
-- Each seal records the format its hash was built with; seals made before this migration keep
-- format 1 and still verify. New seals use format 2.

alter table jetfn.audit_seals add column format smallint not null default 1;
alter table jetfn.audit_seals alter column format drop default;
alter table jetfn.audit_seals add constraint audit_seals_format_check check (format in (1, 2));

-- The canonical text of one audit row in format 2 (independent of the session's time zone; stable,
-- not immutable, so that it is inlined into the hash's string_agg).
create function jetfn.audit_row_text_v2(r jetfn.audit_log) returns text
language sql stable as $$
  select row(r.id, (extract(epoch from r.logged_at) * 1000000)::bigint, r.txid, r.function,
             r.invocation_id, r.attempt, r.db_user, r.schema_name, r.table_name, r.operation,
             r.pk::text, r.old_row::text, r.new_row::text, r.changed_columns)::text
$$;

-- As jetfn.audit_range_hash, with the format-2 row text.
create function jetfn.audit_range_hash_v2(previous_hash text, after_txid bigint, after_id bigint, last_txid bigint, last_id bigint)
returns table (hash text, row_count integer)
language sql stable as $$
  select encode(sha256(convert_to(previous_hash || coalesce(string_agg(jetfn.audit_row_text_v2(l), E'\n' order by l.txid, l.id), ''), 'UTF8')), 'hex'),
         count(*)::integer
  from jetfn.audit_log l
  where l.txid >= after_txid and l.txid <= last_txid
    and (l.txid, l.id) > (after_txid, after_id) and (l.txid, l.id) <= (last_txid, last_id)
$$;

-- As in 0011, sealing in format 2.
create or replace function jetfn.seal_audit(max_rows integer default 10000, max_bytes bigint default 67108864) returns integer
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
  select * into sealed from jetfn.audit_range_hash_v2(previous.hash, previous.last_txid, previous.last_id, last_row.txid, last_row.id);
  insert into jetfn.audit_seals
    (seq, after_txid, after_id, last_txid, last_id, row_count, first_logged_at, last_logged_at, previous_hash, hash, format)
  select previous.seq + 1, previous.last_txid, previous.last_id, last_row.txid, last_row.id, sealed.row_count,
         min(l.logged_at), max(l.logged_at), previous.hash, sealed.hash, 2
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

-- As in 0005, recomputing each seal in its own format. This checks the chain against itself only:
-- whoever can rewrite the rows can rewrite the seals too; `jetfn audit verify` also checks the
-- seals against their anchors in NATS (stream JETFN_AUDIT_ANCHORS), which the database cannot reach.
create or replace function jetfn.verify_audit()
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
    -- Each format's hash is called directly: behind a wrapper of its own, the range query got a
    -- generic plan that read the whole log for every seal.
    if seal.format = 1 then
      select * into recomputed from jetfn.audit_range_hash(seal.previous_hash, seal.after_txid, seal.after_id, seal.last_txid, seal.last_id);
    else
      select * into recomputed from jetfn.audit_range_hash_v2(seal.previous_hash, seal.after_txid, seal.after_id, seal.last_txid, seal.last_id);
    end if;
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
