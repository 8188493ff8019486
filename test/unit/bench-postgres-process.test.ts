import { describe, expect, it } from "vitest";
import { isPostgresProcessOf } from "../../bench/postgres-process";

describe("isPostgresProcessOf", () => {
  const db = "jetfn_bench_1_x_graphile_insert_3";

  it("counts the contender's backends and the server's own processes", () => {
    expect(isPostgresProcessOf(`postgres: 15/main: postgres ${db} 127.0.0.1(50118) idle   `, db)).toBe(true);
    expect(isPostgresProcessOf(`postgres: postgres ${db} [local] INSERT`, db)).toBe(true);
    expect(isPostgresProcessOf("postgres: 15/main: walwriter ", db)).toBe(true);
    expect(isPostgresProcessOf("postgres: 15/main: background writer", db)).toBe(true);
    expect(isPostgresProcessOf("postgres: checkpointer", db)).toBe(true);
    expect(isPostgresProcessOf(`postgres: 15/main: autovacuum worker ${db}`, db)).toBe(true);
    expect(isPostgresProcessOf("/usr/lib/postgresql/15/bin/postgres -D /var/lib/postgresql/15/main", db)).toBe(true);
  });

  it("leaves out backends of other databases on the same server, however they connect", () => {
    expect(isPostgresProcessOf("postgres: 15/main: postgres jetfn_test_981_0 127.0.0.1(5011) idle", db)).toBe(false);
    expect(isPostgresProcessOf("postgres: 15/main: jetfn_owner other ::1(5432) SELECT", db)).toBe(false);
    expect(isPostgresProcessOf("postgres: 15/main: autovacuum worker jetfn_test_981_0", db)).toBe(false);
    expect(isPostgresProcessOf(`postgres: 15/main: ${db} postgres 127.0.0.1(1) idle`, db)).toBe(false);
  });

  it("counts every backend when no database is given", () => {
    expect(isPostgresProcessOf("postgres: 15/main: postgres anything 127.0.0.1(1) idle", undefined)).toBe(true);
  });
});
