-- Dead letters: a dead job retried by id keeps its row and records the new job that replaced it;
-- a dropped job (status 'dropped') records when it was discarded.
alter table jetfn.invocations
  add column retried_as text,
  add column retried_at timestamptz,
  add column dropped_at timestamptz;

-- The dead-letter queue lists dead jobs not yet retried, by function, newest first.
drop index if exists jetfn.invocations_dead_idx;
create index invocations_dead_idx on jetfn.invocations (function, finished_at desc)
  where status = 'dead' and retried_as is null;
