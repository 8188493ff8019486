-- Singleton and debounce keys through the outbox (docs/flow-control-keys-and-priority.md).
--
-- ctx.enqueue(..., { singleton | debounce }) and enqueueInTransaction(..., { singleton | debounce })
-- write a job row with the key headers of the enqueue API: Jetfn-Singleton-Key, or
-- Jetfn-Debounce-Key with Jetfn-Debounce-Period (milliseconds) and optionally
-- Jetfn-Debounce-Max-Wait (milliseconds). Once the transaction committed, the relay claims the key in
-- the JETFN_JOB_KEYS bucket, as the enqueue API does, instead of publishing the row as it is.
--
-- The outbox rules (0001, 0025) now allow those headers too, checked as the enqueue API checks them
-- (runtime/flow/job-keys.ts), and nothing else:
-- * a key is 1-128 of A-Z a-z 0-9 _ . : @ / + = - (the relay stores it base64url-encoded, so it never
--   becomes a subject token or a key-value wildcard);
-- * a job has a singleton key or a debounce key, not both; the period and max wait need a debounce key;
-- * a debounced job has a period of 100 to 86,400,000 ms and no Jetfn-Not-Before (it runs one period
--   after the relay enqueued it); its max wait, if any, is from the period to 86,400,000 ms.
-- runtime/outbox/outbox-rules.ts checks the same. A row with no other header than Jetfn-Id returns
-- at once, as before.
create or replace function jetfn.outbox_row_problem(id text, subject text, headers jsonb, body text) returns text
language plpgsql immutable parallel safe as $$
declare
  invocation text;
  singleton text;
  debounce text;
  period text;
  max_wait text;
begin
  if id is null or subject is null or headers is null or body is null then
    return 'id, subject, headers and body are required';
  end if;
  if pg_catalog.octet_length(body) operator(pg_catalog.>) 67108864 then
    return 'the body is larger than 64 MiB';
  end if;
  if (subject collate pg_catalog."C") operator(pg_catalog.~) '^fn\.job\.[a-z0-9_-]+(\.[a-z0-9_-]+)*$'
     and pg_catalog.char_length(subject) operator(pg_catalog.<=) 207 then
    -- "fn.job." is 7 characters: the function's name starts at 8, "<name>:" is length - 6 long.
    if not pg_catalog.starts_with(id, pg_catalog.substr(subject, 8) operator(pg_catalog.||) ':') then
      return 'a job''s id must be "<function name>:<invocation id>"';
    end if;
    invocation := pg_catalog.substr(id, pg_catalog.char_length(subject) operator(pg_catalog.-) 5);
    if (invocation collate pg_catalog."C") operator(pg_catalog.!~) '^[A-Za-z0-9_-]+$'
       or pg_catalog.char_length(invocation) not between 8 and 128 then
      return 'a job''s invocation id must be 8-128 letters, digits, "-" or "_"';
    end if;
    if headers operator(pg_catalog.=) '{}'::pg_catalog.jsonb
       or headers operator(pg_catalog.=) pg_catalog.jsonb_build_object('Jetfn-Id', invocation) then
      return null;
    end if;
    -- Not an object (a string, an array): deleting keys from it would raise instead of naming the rule.
    if pg_catalog.jsonb_typeof(headers) operator(pg_catalog.<>) 'object' then
      return 'a job''s headers are a JSON object';
    end if;
    if (headers operator(pg_catalog.-) '{Jetfn-Not-Before,Jetfn-Priority,Jetfn-Singleton-Key,Jetfn-Debounce-Key,Jetfn-Debounce-Period,Jetfn-Debounce-Max-Wait}'::text[])
         operator(pg_catalog.<>) pg_catalog.jsonb_build_object('Jetfn-Id', invocation)
       or pg_catalog.jsonb_typeof(headers operator(pg_catalog.->) 'Jetfn-Not-Before') operator(pg_catalog.<>) 'string'
       or pg_catalog.jsonb_typeof(headers operator(pg_catalog.->) 'Jetfn-Priority') operator(pg_catalog.<>) 'string'
       or pg_catalog.jsonb_typeof(headers operator(pg_catalog.->) 'Jetfn-Singleton-Key') operator(pg_catalog.<>) 'string'
       or pg_catalog.jsonb_typeof(headers operator(pg_catalog.->) 'Jetfn-Debounce-Key') operator(pg_catalog.<>) 'string'
       or pg_catalog.jsonb_typeof(headers operator(pg_catalog.->) 'Jetfn-Debounce-Period') operator(pg_catalog.<>) 'string'
       or pg_catalog.jsonb_typeof(headers operator(pg_catalog.->) 'Jetfn-Debounce-Max-Wait') operator(pg_catalog.<>) 'string'
       or ((headers operator(pg_catalog.->>) 'Jetfn-Not-Before') collate pg_catalog."C")
            operator(pg_catalog.!~) '^[0-9]{1,15}$'
       or ((headers operator(pg_catalog.->>) 'Jetfn-Priority') collate pg_catalog."C")
            operator(pg_catalog.!~) '^[1-3]$' then
      return 'a job''s headers are Jetfn-Id, equal to its invocation id, and optionally Jetfn-Not-Before, its due time in epoch milliseconds, Jetfn-Priority, 1 to 3, and a key: Jetfn-Singleton-Key, or Jetfn-Debounce-Key with Jetfn-Debounce-Period and optionally Jetfn-Debounce-Max-Wait';
    end if;
    singleton := headers operator(pg_catalog.->>) 'Jetfn-Singleton-Key';
    debounce := headers operator(pg_catalog.->>) 'Jetfn-Debounce-Key';
    period := headers operator(pg_catalog.->>) 'Jetfn-Debounce-Period';
    max_wait := headers operator(pg_catalog.->>) 'Jetfn-Debounce-Max-Wait';
    if singleton is not null and debounce is not null then
      return 'a job has a singleton key or a debounce key, not both';
    end if;
    if debounce is null and (period is not null or max_wait is not null) then
      return 'Jetfn-Debounce-Period and Jetfn-Debounce-Max-Wait need Jetfn-Debounce-Key';
    end if;
    if (coalesce(singleton, debounce) collate pg_catalog."C") operator(pg_catalog.!~) '^[A-Za-z0-9_.:@/+=-]+$'
       or pg_catalog.char_length(coalesce(singleton, debounce)) operator(pg_catalog.>) 128 then
      return 'a singleton or debounce key is 1-128 letters, digits or _ - . : @ / + =';
    end if;
    if debounce is null then
      return null;
    end if;
    if headers operator(pg_catalog.?) 'Jetfn-Not-Before' then
      return 'a debounced job takes no Jetfn-Not-Before';
    end if;
    -- Cast only once the pattern matched: an OR does not promise to stop at its first true operand.
    if period is null or (period collate pg_catalog."C") operator(pg_catalog.!~) '^[0-9]{1,8}$' then
      return 'a debounced job needs Jetfn-Debounce-Period, 100 to 86400000 milliseconds';
    end if;
    if period::pg_catalog.int8 not between 100 and 86400000 then
      return 'a debounced job needs Jetfn-Debounce-Period, 100 to 86400000 milliseconds';
    end if;
    if max_wait is null then
      return null;
    end if;
    if (max_wait collate pg_catalog."C") operator(pg_catalog.!~) '^[0-9]{1,8}$' then
      return 'Jetfn-Debounce-Max-Wait is milliseconds, from the period to 86400000';
    end if;
    if max_wait::pg_catalog.int8 not between period::pg_catalog.int8 and 86400000 then
      return 'Jetfn-Debounce-Max-Wait is milliseconds, from the period to 86400000';
    end if;
    return null;
  end if;
  if (subject collate pg_catalog."C") operator(pg_catalog.~) '^fn\.event\.[a-z0-9_-]+(\.[a-z0-9_-]+)*$'
     and pg_catalog.char_length(subject) operator(pg_catalog.<=) 209 then
    if (id collate pg_catalog."C") operator(pg_catalog.!~) '^[!-~]+$' or pg_catalog.char_length(id) > 128 then
      return 'an event''s id must be 1-128 printable ASCII characters, no spaces';
    end if;
    if headers operator(pg_catalog.<>) '{}'::pg_catalog.jsonb then
      return 'an event has no headers';
    end if;
    return null;
  end if;
  return 'the subject must be fn.job.<function name> or fn.event.<event name>';
end
$$;
