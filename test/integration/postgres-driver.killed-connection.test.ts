import net from "node:net";
import repositoryPostgres, { type Sql } from "postgres";
import { afterAll, afterEach, beforeAll, expect, it } from "vitest";
import { isConnectionError } from "../../runtime/db/client";
import { createTestDatabase, type TestDatabase } from "../helpers/database";
import { eventually } from "../helpers/environment";

// What patches/postgres+3.4.9.patch fixes in postgres.js, each case deterministic against the
// unpatched driver (where it hangs, runs a statement in another session, or throws from a timer).
// Every pool has one connection, so the connection object the server killed is the one the pool
// reconnects for the next user. Only backends of this file's own database are terminated.
// JETFN_TEST_DRIVER names another copy of the driver to check instead of this repository's: the
// package install test points it at the one bundled into an installed jetfn.

const postgres: typeof repositoryPostgres = process.env.JETFN_TEST_DRIVER
  ? ((await import(process.env.JETFN_TEST_DRIVER)) as { default: typeof repositoryPostgres }).default
  : repositoryPostgres;

let database: TestDatabase;
const pools: Sql[] = [];

beforeAll(async () => {
  database = await createTestDatabase();
  await database.sql`create table driver_probe (note text not null)`;
});

afterEach(async () => {
  await Promise.allSettled(pools.splice(0).map((pool) => pool.end({ timeout: 1 })));
  await database.sql`truncate driver_probe`;
});

afterAll(async () => {
  await database?.drop();
});

/** A pool of one connection to this file's database. */
function onePool(options: repositoryPostgres.Options<Record<string, repositoryPostgres.PostgresType>> = {}): Sql {
  const pool = postgres(database.url, { max: 1, onnotice: () => {}, ...options });
  pools.push(pool);
  return pool;
}

/** Ends `pid`'s session with pg_terminate_backend, if it belongs to this file's database. */
async function terminate(pid: number): Promise<void> {
  await database.sql`
    select pg_terminate_backend(pid) from pg_stat_activity where pid = ${pid} and datname = current_database()`;
}

/** Waits until `pid` is running a statement (so a kill lands mid-query). */
async function whileActive(pid: number): Promise<void> {
  await eventually(async () => {
    const [row] = await database.sql<{ state: string }[]>`select state from pg_stat_activity where pid = ${pid}`;
    return row?.state === "active";
  }, 5_000);
}

type Settled =
  | { status: "fulfilled"; value: unknown }
  | { status: "rejected"; reason: unknown }
  | { status: "pending" };

/** How `promise` settled within `ms` (the unpatched driver leaves some queries pending forever). */
function settle(promise: PromiseLike<unknown>, ms = 3_000): Promise<Settled> {
  return new Promise<Settled>((resolve) => {
    const timer = setTimeout(() => resolve({ status: "pending" }), ms);
    Promise.resolve(promise).then(
      (value) => resolve({ status: "fulfilled", value }),
      (reason: unknown) => resolve({ status: "rejected", reason }),
    );
    // The timer must not hold the result back once the promise settled.
    Promise.resolve(promise).then(
      () => clearTimeout(timer),
      () => clearTimeout(timer),
    );
  });
}

function expectConnectionClosed(outcome: Settled): void {
  expect(outcome.status).toBe("rejected");
  const reason = (outcome as { reason: unknown }).reason;
  expect(isConnectionError(reason), String(reason)).toBe(true);
}

/** The notes that reached the table, from whichever session. */
async function probeNotes(): Promise<string[]> {
  const rows = await database.sql<{ note: string }[]>`select note from driver_probe order by note`;
  return rows.map((row) => row.note);
}

/** The server process of the session `sql` runs on (a pool, a reserved handle or a transaction). */
async function backendPid(sql: Pick<Sql, "unsafe">): Promise<number> {
  const [row] = await sql.unsafe("select pg_backend_pid() as pid");
  return row?.pid as number;
}

it("rejects a reserved handle's statements once its session was killed, instead of running them in the next session", async () => {
  const pool = onePool();
  const handle = await pool.reserve();
  await handle`begin`;
  await handle`insert into driver_probe values ('inside the transaction')`;
  const killed = await backendPid(handle);
  await terminate(killed);

  // Queued until the driver notices the close, then answered on the reconnected connection object.
  const next = await backendPid(pool);
  expect(next).not.toBe(killed);

  const late = await settle(handle`insert into driver_probe values ('after the kill')`);
  expectConnectionClosed(late);
  // Nothing of the killed transaction committed, and the late insert ran nowhere.
  expect(await probeNotes()).toEqual([]);
  handle.release();
  expect(await backendPid(pool)).toBe(next);
});

it("rejects a begin() callback's statements after its session was killed", async () => {
  const pool = onePool();
  let killedPid: (pid: number) => void = () => {};
  const started = new Promise<number>((resolve) => {
    killedPid = resolve;
  });
  let resume: () => void = () => {};
  const paused = new Promise<void>((resolve) => {
    resume = resolve;
  });
  let late: Promise<Settled> | undefined;
  const transaction = pool.begin(async (sql) => {
    await sql`insert into driver_probe values ('inside the transaction')`;
    killedPid(await backendPid(sql));
    await paused;
    late = settle(sql`insert into driver_probe values ('after the kill')`);
    await late;
  });
  const outcome = settle(transaction, 10_000);

  await terminate(await started);
  expectConnectionClosed(await outcome);
  // The pool reconnects the same connection object for someone else; then the callback goes on.
  await backendPid(pool);
  resume();
  await eventually(() => late);
  expectConnectionClosed(await (late as Promise<Settled>));
  expect(await probeNotes()).toEqual([]);
});

it("rejects a statement sent between the socket's error and its close, and answers the next session's own queries", async () => {
  const sockets: net.Socket[] = [];
  const url = new URL(database.url);
  // The driver's `socket` option: a real connection to Postgres that the test can break with an
  // error (a reset), which the driver sees as 'error' first and 'close' a moment later.
  const connectSocket = () =>
    new Promise<net.Socket>((resolve, reject) => {
      const socket = net.connect(Number(url.port || 5432), url.hostname);
      socket.once("connect", () => resolve(socket)).once("error", reject);
      sockets.push(socket);
    });
  const pool = onePool({ socket: connectSocket } as never);
  const handle = await pool.reserve();
  const killed = await backendPid(handle);

  let betweenErrorAndClose: Promise<Settled> | undefined;
  const sleeping = handle`select pg_sleep(30)`.catch((error: unknown) => {
    // The driver rejected the running query on the socket's 'error'; the 'close' has not come yet.
    betweenErrorAndClose = settle(handle`select 'stale' as who`);
    return error;
  });
  await whileActive(killed);
  sockets.at(-1)?.destroy(Object.assign(new Error("test: connection reset"), { code: "ECONNRESET" }));
  expect(isConnectionError(await sleeping)).toBe(true);
  await terminate(killed);

  // Queued behind the close; each must get its own answer on the new session.
  const answers = await settle(Promise.all([1, 2, 3].map((n) => pool`select ${n}::int as n, 'fresh' as who`)));
  expectConnectionClosed(await (betweenErrorAndClose as Promise<Settled>));
  expect(answers.status).toBe("fulfilled");
  const rows = (answers as { value: { n: number; who: string }[][] }).value.map(([row]) => row);
  expect(rows).toEqual([1, 2, 3].map((n) => ({ n, who: "fresh" })));
  handle.release();
});

it("keeps the pool usable when a handle whose session was killed is released", async () => {
  const pool = onePool();
  const handle = await pool.reserve();
  const killed = await backendPid(handle);
  const sleeping = settle(handle`select pg_sleep(30)`, 10_000);
  await whileActive(killed);
  await terminate(killed);
  expectConnectionClosed(await sleeping);

  handle.release();
  const answer = await settle(pool`select 1 as one`);
  expect(answer).toEqual({ status: "fulfilled", value: [{ one: 1 }] });
});

it("hands a reserve that was waiting for the killed connection the reconnected one", async () => {
  const pool = onePool();
  const first = await pool.reserve();
  const killed = await backendPid(first);
  const waiting = pool.reserve();
  await terminate(killed);

  const second = await settle(waiting, 5_000);
  expect(second.status).toBe("fulfilled");
  const handle = (second as { value: repositoryPostgres.ReservedSql }).value;
  expect(await backendPid(handle)).not.toBe(killed);
  // The first handle's session is over: releasing it must not give the second one's connection
  // to the pool, where a query would run in the middle of the second handle's work.
  first.release();
  const meanwhile = pool`select 1 as one`.execute();
  expect(await settle(meanwhile, 300)).toEqual({ status: "pending" });
  handle.release();
  expect(await settle(meanwhile)).toEqual({ status: "fulfilled", value: [{ one: 1 }] });
});

it("rejects statements waiting in a reserved handle's own queue when its session is killed", async () => {
  const pool = onePool();
  const handle = await pool.reserve();
  const killed = await backendPid(handle);
  // A parameterized unprepared statement is described first, so the driver holds the handle's
  // next statements in the handle's queue until it answers.
  const sleeping = settle(handle.unsafe("select pg_sleep(30), $1::int as n", [1]).execute(), 10_000);
  const queued = settle(handle`select 2 as n`.execute(), 10_000);
  await whileActive(killed);
  await terminate(killed);

  expectConnectionClosed(await sleeping);
  expectConnectionClosed(await queued);
  handle.release();
  expect(await settle(pool`select 1 as one`)).toEqual({ status: "fulfilled", value: [{ one: 1 }] });
});
