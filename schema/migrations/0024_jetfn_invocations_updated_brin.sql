-- The dashboard's charts and lists read the invocations touched in a recent window (updated_at >=
-- now - 15 min, 1 h or 24 h), across every runtime. updated_at is set on every write of a row and
-- rows are written in time order, so a BRIN index finds the window's pages for a few KB of index,
-- at almost no cost per insert (unlike a btree on the hot completion path). finished_at's BRIN does
-- not serve: a failed attempt waiting for its retry has no finished_at, and its error must show.
-- autosummarize: a block range is summarized as soon as it fills (an autovacuum work item), not at
-- the next VACUUM; an unsummarized range matches every query, so without it the index would skip
-- nothing written since the last vacuum.
create index invocations_updated_brin on jetfn.invocations using brin (updated_at) with (autosummarize = on);
