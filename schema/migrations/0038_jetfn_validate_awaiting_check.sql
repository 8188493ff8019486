-- Validates the status check 0037 added without validating it, as 0035 did for 0034's.
alter table jetfn.invocations validate constraint invocations_status_check;
