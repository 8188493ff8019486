import { describe, expect, it } from "vitest";
import { statementRefusal } from "../../runtime/db/statement-guard";

/**
 * Texts Postgres 15 reads differently from the guard, each checked against a real server: the
 * server runs the COMMIT (or changes the setting) that the guard does not see.
 */
const bypasses: Record<string, string> = {
  // Postgres ends a -- comment at \r as at \n.
  "a carriage return ends a line comment": "select 1 --\r; commit",
  "a carriage return ends a line comment (rollback)": "insert into t values (1) -- x\r; rollback",
  // U&"..." names are read with their escapes: this is set_config.
  "a Unicode-escaped function name": "select U&\"set\\005fconfig\"('search_path', 'x', false)",
  "a Unicode-escaped advisory lock": 'select U&"pg\\005fadvisory\\005flock"(1)',
  // Setting names written with escapes are the protected names.
  "a Unicode-escaped protected setting": "select set_config(U&'standard\\005fconforming\\005fstrings', 'off', true)",
  "an octal-escaped protected setting": "select set_config(E'standard\\137conforming\\137strings', 'off', true)",
  "a hex-escaped audit stamp": "select set_config(E'jetfn\\x2efunction', 'ledger-add', true)",
  // With standard_conforming_strings off (code the guard cannot see can set it for the transaction:
  // query_to_xml, a function), \' escapes a quote in a plain string: the COMMIT is outside any string.
  "a backslash-quote read without standard strings": "select 'a\\' , ' ; commit; -- '",
  // A table in pg_temp is a temporary table: it shadows app tables of the same name for later
  // members of a shared transaction (their inserts land in it and vanish at COMMIT).
  "a table created in pg_temp": "create table pg_temp.ledger (tag text)",
  "a view created in pg_temp": "create view pg_temp.ledger as select 1",
  "select into pg_temp": "select 1 as n into pg_temp.ledger",
};

describe("statement guard (review): texts Postgres reads differently", () => {
  for (const [name, text] of Object.entries(bypasses)) {
    it(`refuses ${name}`, () => {
      expect(statementRefusal(text), JSON.stringify(text)).toBeDefined();
    });
  }
});

/** Legitimate handler SQL the guard must keep allowing. */
const legitimate = [
  "select 'C:\\path\\file' as p",
  "select 'a\\\\' as p, 'b' as q",
  "select * from ledger where tag like 'a\\_%'",
  "select e'tab\\there' as t",
  'select "tag" from "ledger" where "tag" = $1 for update',
  'insert into "ledger" ("id", "tag") values (default, $1) on conflict ("tag") do update set "tag" = excluded."tag" returning "id"',
  "with moved as (delete from a returning *) insert into b select * from moved",
  "select 1 -- trailing comment\n",
  "select 'commit' as word, \"rollback\" from t",
];

describe("statement guard (review): legitimate SQL", () => {
  for (const text of legitimate) {
    it(`allows ${JSON.stringify(text)}`, () => {
      expect(statementRefusal(text)).toBeUndefined();
    });
  }
});

describe("statement guard (review): session defaults", () => {
  it("refuses ALTER ROLE ... SET (a role may set its own session defaults; the reset restores them)", () => {
    expect(statementRefusal("alter role current_user set default_transaction_read_only = on")).toBeDefined();
    expect(statementRefusal("ALTER USER jetfn_runtime SET search_path = evil")).toBeDefined();
    expect(statementRefusal("alter database app set search_path = evil")).toBeDefined();
    expect(statementRefusal("alter table ledger add column n int")).toBeUndefined();
  });
});

describe("statement guard (review): SQL run from text", () => {
  // Each sets the audit stamp for the rest of the transaction on Postgres 15 (checked).
  it.each([
    "select query_to_xml('select set_config(''jetfn.invocation_id'', ''other'', true)', false, false, '')",
    "select * from ts_stat('select set_config(''jetfn.function'', ''forged'', true)::tsvector')",
    "select ts_rewrite('a'::tsquery, 'select set_config(''jetfn.function'', ''x'', true)::tsquery, ''b''::tsquery')",
  ])("refuses %s", (text) => {
    expect(statementRefusal(text)).toBeDefined();
  });
});

describe("statement guard (review): pg_temp in search_path", () => {
  it("allows naming pg_temp in SET LOCAL search_path", () => {
    expect(statementRefusal("set local search_path = app, pg_temp")).toBeUndefined();
  });
});
