-- The index the matcher of durable waits looks waiting steps up by (0037): made in a transaction of
-- its own, which blocks writes to jetfn.steps while it reads the table, and nothing else.
create index if not exists steps_waiting_idx on jetfn.steps (event, match_paths, match_values) where status = 'waiting';
