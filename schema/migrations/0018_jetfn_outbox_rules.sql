-- The outbox carries only jetfn's own messages. Whoever may insert into jetfn.outbox (the runtime
-- role, so handler code too, and apps using enqueueInTransaction) chose the subject, headers and
-- id the relay published with the runtime's NATS rights: a row for
-- '$JS.API.STREAM.PURGE.JETFN_JOBS' purged the jobs stream, again every second, since the refused
-- row stayed. Now:
--
-- * jetfn.outbox_row_problem() states the rules once: a job for a valid function name
--   (fn.job.<name>, id "<name>:<invocation id>" as jetfn's Nats-Msg-Id of a job, headers {} or
--   {"Jetfn-Id": <that invocation id>}) or an event
--   for a valid event name (fn.event.<name>, no headers, an id of printable ASCII); a body of at
--   most 64 MiB, the largest max_payload a NATS server accepts. The relay checks the same rules in
--   runtime/outbox-rules.ts (and the server's real max_payload) before publishing.
-- * A CHECK constraint refuses other rows at insert, for every role, superusers included.
-- * Rows the relay refuses anyway (the constraint dropped, a body over the server's max_payload, a
--   publish JetStream keeps refusing) move to jetfn.outbox_set_aside, where `jetfn outbox` lists,
--   releases or drops them. Rows already in the outbox that break the rules move there now.

-- plpgsql with every operator and function qualified, instead of `set search_path`: the setting
-- made each call cost about 30 us (it runs on every insert); qualified names keep a caller's
-- search_path from swapping in operators of its own. Lengths are checked apart from the patterns:
-- a bounded repetition ({8,128}) made the regular expression about 10 us slower.
create function jetfn.outbox_row_problem(id text, subject text, headers jsonb, body text) returns text
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
       and headers operator(pg_catalog.<>) pg_catalog.jsonb_build_object('Jetfn-Id', invocation) then
      return 'a job''s only header is Jetfn-Id, equal to its invocation id';
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

comment on function jetfn.outbox_row_problem(text, text, jsonb, text) is
  'Why an outbox row is not a message jetfn publishes (null when it is); see runtime/outbox-rules.ts.';

create table jetfn.outbox_set_aside (
  -- The row's position in jetfn.outbox: ids may repeat here (set aside, released, set aside again).
  position bigint primary key,
  id text not null,
  subject text not null,
  headers jsonb not null,
  body text not null,
  function text,
  invocation_id text,
  created_at timestamptz not null,
  reason text not null,
  set_aside_at timestamptz not null default clock_timestamp()
);

create index outbox_set_aside_id on jetfn.outbox_set_aside (id);

comment on table jetfn.outbox_set_aside is
  'Outbox rows the relay refused to publish, with why; `jetfn outbox` lists, releases or drops them.';

lock table jetfn.outbox in access exclusive mode;

with moved as (
  delete from jetfn.outbox o
  where jetfn.outbox_row_problem(o.id, o.subject, o.headers, o.body) is not null
  returning o.*
)
insert into jetfn.outbox_set_aside (position, id, subject, headers, body, function, invocation_id, created_at, reason)
select m.position, m.id, m.subject, m.headers, m.body, m.function, m.invocation_id, m.created_at,
       jetfn.outbox_row_problem(m.id, m.subject, m.headers, m.body)
from moved m;

alter table jetfn.outbox add constraint outbox_row_is_a_jetfn_message
  check (jetfn.outbox_row_problem(id, subject, headers, body) is null);
