-- Validates the status check 0034 added without validating it: in a transaction of its own, where it
-- holds a lock that lets the runtimes write records while it reads them all.
alter table jetfn.invocations validate constraint invocations_status_check;
