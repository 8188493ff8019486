import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Runtime } from "../../runtime/runtime";
import { createTestDatabase, type TestDatabase } from "../helpers/database";
import { startDroppingProxy } from "../helpers/dropping-proxy";
import { eventually, startClusterFunctionsRuntime } from "../helpers/environment";
import { captureLogs } from "../helpers/logs";
import { startNatsServer, type TestNatsServer } from "../helpers/nats-server";

// startRuntime's `signal`: an app embedding the runtime can give up a start that waits on a silent
// NATS (each unanswered request is asked again for up to 30 s), and stop the runtime later with the
// same signal. Without it a start could only be waited out.

let database: TestDatabase;
let nats: TestNatsServer;

beforeAll(async () => {
  database = await createTestDatabase();
  nats = await startNatsServer();
});

afterAll(async () => {
  await database?.drop();
  await nats?.stop();
});

/** Connections the runtime's pool holds to the test database. */
async function databaseConnections(): Promise<number> {
  const [row] = await database.sql`
    select count(*)::int as count from pg_stat_activity
    where datname = current_database() and pid <> pg_backend_pid()`;
  return row?.count ?? 0;
}

function start(natsUrl: string, signal: AbortSignal): Promise<Runtime> {
  return startClusterFunctionsRuntime({ natsUrl, databaseUrl: database.url, logger: captureLogs().logger, signal });
}

describe("startRuntime's signal", () => {
  it("ends a start waiting on an unanswered request, stops what it started, and rejects with the reason", async () => {
    // JetStream's account info never reaches the server: the start would ask again for 30 s.
    const proxy = await startDroppingProxy(nats.port, (subject) => subject === "$JS.API.INFO");
    const controller = new AbortController();
    const reason = new Error("the app is shutting down");
    const starting = start(proxy.url, controller.signal);
    await eventually(() => proxy.dropped.length > 0, 10_000);
    const abortedAt = Date.now();
    controller.abort(reason);
    await expect(starting).rejects.toBe(reason);
    // The request in flight runs out its 5 s, and nothing is asked after it.
    expect(Date.now() - abortedAt).toBeLessThan(8_000);
    const asked = proxy.published.length;
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    expect(proxy.published.slice(asked)).toEqual([]);
    expect(await databaseConnections()).toBe(0);
  });

  it("rejects at once with an already aborted signal, connecting to nothing", async () => {
    const proxy = await startDroppingProxy(nats.port, () => false);
    const reason = new Error("aborted before");
    await expect(start(proxy.url, AbortSignal.abort(reason))).rejects.toBe(reason);
    expect(proxy.published).toEqual([]);
  });

  it("stops the runtime when aborted after the start", async () => {
    const controller = new AbortController();
    const runtime = await start(nats.url, controller.signal);
    expect(runtime.nats.isClosed()).toBe(false);
    controller.abort();
    await eventually(() => runtime.nats.isClosed(), 15_000);
    expect(await databaseConnections()).toBe(0);
  });
});
