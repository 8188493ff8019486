import postgres, { type Sql } from "postgres";
import { afterAll, beforeAll, expect, it } from "vitest";
import { isConnectionError } from "../../runtime/db/client";
import { WatchedConnection } from "../../runtime/db/watched-connection";
import { createTestDatabase, type TestDatabase } from "../helpers/database";
import { eventually } from "../helpers/environment";

let database: TestDatabase;
let pool: Sql;

beforeAll(async () => {
  database = await createTestDatabase();
  pool = postgres(database.url, { max: 2, onnotice: () => {} });
});

afterAll(async () => {
  await pool?.end({ timeout: 2 });
  await database?.drop();
});

it("refuses queries once the server ended its session, and leaves the pool healthy", async () => {
  const connection = await WatchedConnection.reserve(pool);
  const [row] = await connection.unsafe("select pg_backend_pid() as pid");
  expect(connection.closed).toBe(false);

  await database.sql`select pg_terminate_backend(${row?.pid as number})`;
  await eventually(() => connection.closed || undefined);

  // The patched driver refuses it: unpatched, it was written to a closed socket from a timer,
  // killing the process (porsager/postgres#1208), or ran on a reconnected session of the pool.
  const refused = await connection.unsafe("select 1").catch((error: unknown) => error);
  expect(isConnectionError(refused)).toBe(true);
  expect((refused as { code?: string }).code).toBe("CONNECTION_CLOSED");

  connection.release();
  const answers = await Promise.all(Array.from({ length: 4 }, () => pool`select 1 as one`));
  expect(answers.map(([answer]) => answer?.one)).toEqual([1, 1, 1, 1]);
});

it("keeps working and gives the connection back when nothing went wrong", async () => {
  const connection = await WatchedConnection.reserve(pool);
  await connection.unsafe("begin");
  await connection.unsafe("select set_config('jetfn.function', $1, true)", ["watched"]);
  const [row] = await connection.unsafe("select current_setting('jetfn.function') as fn");
  await connection.unsafe("commit");
  expect(row?.fn).toBe("watched");
  connection.release();
  expect(connection.closed).toBe(true);
  const [again] = await pool`select 2 as two`;
  expect(again?.two).toBe(2);
});
