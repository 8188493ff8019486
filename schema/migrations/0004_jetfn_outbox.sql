-- Transactional outbox: jobs and events written in a transaction, published to NATS once it commits.
-- Rows are written by invocations (ctx.enqueue / ctx.call / ctx.emit, together with the
-- invocation's record) and by apps (enqueueInTransaction / emitInTransaction). The relay in every
-- runtime publishes them with Nats-Msg-Id = id and deletes them.
create table jetfn.outbox (
  position bigint generated always as identity primary key,
  id text not null unique,
  subject text not null,
  headers jsonb not null default '{}'::jsonb,
  body text not null,
  function text,
  invocation_id text,
  created_at timestamptz not null default clock_timestamp()
);

comment on table jetfn.outbox is
  'Messages waiting to be published to NATS after their transaction committed (position = publish order; id = Nats-Msg-Id).';

-- Rows written outside any function are published by the relay's sweep; wake it up on commit.
-- (NOTIFY is delivered at commit and de-duplicated within a transaction, so a batch costs one.)
create function jetfn.notify_outbox() returns trigger
language plpgsql as $$
begin
  perform pg_notify('jetfn_outbox', '');
  return null;
end
$$;

create trigger jetfn_outbox_notify
  after insert on jetfn.outbox
  for each row when (new.invocation_id is null)
  execute function jetfn.notify_outbox();
