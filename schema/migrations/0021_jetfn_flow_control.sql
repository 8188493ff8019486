-- Delayed jobs through the outbox. ctx.enqueue(..., { delay }) and enqueueInTransaction(..., { delay })
-- write a job row with a second header, Jetfn-Not-Before (the due time, epoch milliseconds as 1-15
-- digits); the relay routes such a row to the delayed-jobs stream (runtime/job-delay.ts). The
-- outbox rules (0018) allowed only Jetfn-Id on a job row: they now allow that header too, and
-- nothing else. runtime/outbox-rules.ts checks the same.

create or replace function jetfn.outbox_row_problem(id text, subject text, headers jsonb, body text) returns text
language plpgsql immutable parallel safe as $$
declare
  invocation text;
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
    if headers operator(pg_catalog.<>) '{}'::pg_catalog.jsonb
       and headers operator(pg_catalog.<>) pg_catalog.jsonb_build_object('Jetfn-Id', invocation)
       and not (
         (headers operator(pg_catalog.-) 'Jetfn-Not-Before'::text)
           operator(pg_catalog.=) pg_catalog.jsonb_build_object('Jetfn-Id', invocation)
         and pg_catalog.jsonb_typeof(headers operator(pg_catalog.->) 'Jetfn-Not-Before')
           operator(pg_catalog.=) 'string'
         and ((headers operator(pg_catalog.->>) 'Jetfn-Not-Before') collate pg_catalog."C")
           operator(pg_catalog.~) '^[0-9]{1,15}$'
       ) then
      return 'a job''s headers are Jetfn-Id, equal to its invocation id, and optionally Jetfn-Not-Before, its due time in epoch milliseconds';
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
