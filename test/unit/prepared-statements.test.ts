import type { Sql } from "postgres";
import { expect, it } from "vitest";
import { MAX_PREPARED, shouldPrepare } from "../../runtime/db/prepared-statements";

it("prepares the first distinct statements of a pool, and no new ones past the cap", () => {
  const pool = {} as Sql;
  const other = {} as Sql;
  for (let i = 0; i < MAX_PREPARED; i++) expect(shouldPrepare(pool, `select ${i} + $1`)).toBe(true);
  expect(shouldPrepare(pool, "select 'one too many' || $1")).toBe(false);
  // Known texts stay prepared; another pool has a budget of its own.
  expect(shouldPrepare(pool, "select 0 + $1")).toBe(true);
  expect(shouldPrepare(other, "select 'one too many' || $1")).toBe(true);
});
