import { describe, expect, it } from "vitest";
import { assertStatementAllowed, statementRefusal } from "../../runtime/db/statement-guard";

const allowed = [
  "select 1",
  "insert into ledger (tag) values ($1)",
  "  \n\tSELECT * FROM t WHERE note = 'commit; rollback'",
  "select 'it''s; commit'",
  "select E'\\'; commit; --'",
  'select "rollback" from "commit"',
  "select $$; rollback; $$",
  "select $tag$ commit $other$ rollback $tag$",
  "select 1 -- ; rollback",
  "select 1 /* ; rollback /* nested */ ; commit */",
  "update t set begin = 1",
  "with x as (insert into t values (1) returning *) select * from x",
  "set local search_path = app, public",
  "SET LOCAL statement_timeout = '5s'",
  "set transaction isolation level serializable",
  "set constraints all deferred",
  "set local role tenant_reader",
  "select set_config('app.tenant', $1, true)",
  "select pg_catalog.set_config('app.tenant', 'x', true)",
  "select pg_advisory_xact_lock(42)",
  "select pg_try_advisory_xact_lock(1, 2)",
  "savepoint jetfn_savepoint_1",
  "release savepoint jetfn_savepoint_2",
  "rollback to savepoint jetfn_savepoint_3",
  "declare c cursor for select 1",
  "create table t (temp int, temporary text)",
  "create temp table staged (n integer) on commit drop",
  "notify channel, 'payload'",
  "lock table t in exclusive mode",
  "select 1;;",
  "",
];

const refused = [
  "rollback",
  "ROLLBACK",
  "commit",
  "  COMMIT WORK",
  "end",
  "abort",
  "begin",
  "start transaction",
  "/* x */ rollback",
  "-- x\nrollback",
  "select 1; rollback",
  "select 'a'';'; commit",
  "select $$x$$; commit",
  "select E'\\\\'; commit",
  "savepoint s1",
  "release savepoint jetfn_job_1",
  "release jetfn_job_1",
  "rollback to savepoint jetfn_job_1",
  "rollback to jetfn_job_1",
  "rollback prepared 'x'",
  "commit prepared 'x'",
  "prepare transaction 'x'",
  "prepare q as select 1",
  "deallocate all",
  "set search_path = app",
  "set session default_transaction_read_only = on",
  "SET default_transaction_read_only TO on",
  "set role other",
  "set session authorization other",
  "set local jetfn.function = 'ledger-add'",
  "set local \"jetfn\".invocation_id = 'x'",
  "set local standard_conforming_strings = off",
  "set time zone 'UTC'",
  "reset all",
  "reset search_path",
  "discard all",
  "listen c",
  "unlisten *",
  "load 'plugin'",
  "do $$ begin perform 1; end $$",
  "select pg_advisory_lock(1)",
  "select * from pg_catalog.pg_try_advisory_lock(1)",
  'select "pg_advisory_lock"(1)',
  "select pg_advisory_unlock_all()",
  "select set_config('search_path', 'app', false)",
  "select set_config('search_path', 'app', $1)",
  "select set_config($1, 'x', true)",
  "select set_config('jetfn.function', 'ledger-add', true)",
  "select set_config('JETFN.invocation_id', 'x', true)",
  "declare c cursor with hold for select 1",
  "create temp table t (id int)",
  "create local temporary table t (id int)",
  "create or replace temp view v as select 1",
  "select 1 into temp t",
  "select 'unterminated",
  "select $$unterminated",
  'select "unterminated',
  "select 1 /* unterminated",
];

describe("statement guard", () => {
  it.each(allowed)("allows %j", (text) => {
    expect(statementRefusal(text)).toBeUndefined();
  });

  it.each(refused)("refuses %j", (text) => {
    expect(statementRefusal(text)).toBeTypeOf("string");
  });

  it("refuses with E_STATEMENT_REFUSED", () => {
    expect(() => assertStatementAllowed("rollback")).toThrow(expect.objectContaining({ code: "E_STATEMENT_REFUSED" }));
  });
});
