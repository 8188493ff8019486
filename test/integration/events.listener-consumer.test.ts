import { mkdtemp, rm, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { type JetStreamClient, type JetStreamManager, jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DEFAULT_MAX_ACK_PENDING } from "../../runtime/nats/streams";
import { type Runtime, startRuntime } from "../../runtime/runtime";
import { createTestDatabase, type TestDatabase } from "../helpers/database";
import { losingFirst } from "../helpers/dropping-proxy";
import { eventually } from "../helpers/environment";
import { type CapturedLogger, captureLogs } from "../helpers/logs";
import { startNatsServer, type TestNatsServer } from "../helpers/nats-server";
import { stopWhenTestEnds } from "../helpers/test-scope";

// How a deployed listener's consumer follows its redeploys: the settings that can change in place
// do, the start (onFrom) stays and is told, and a consumer no longer wanted is deleted even when
// NATS loses the first request to delete it.

let database: TestDatabase;

beforeAll(async () => {
  database = await createTestDatabase();
});

afterAll(async () => {
  await database?.drop();
});

interface Listening {
  nats: TestNatsServer;
  manager: JetStreamManager;
  js: JetStreamClient;
  dir: string;
  file: string;
}

/** A listener source: `on` and `onFrom` as given (none: the function does not listen). */
function listenerSource(listen: { on?: string; onFrom?: string }): string {
  const on = listen.on ? `on: ${JSON.stringify(listen.on)},` : "";
  const onFrom = listen.onFrom ? `onFrom: ${JSON.stringify(listen.onFrom)},` : "";
  return `import { defineFunction, z } from "jetfn";
export default defineFunction({ ${on} ${onFrom} input: z.object({}).passthrough(), async handler() { return null; } });
`;
}

/** A nats-server, a client's manager on it, and a functions folder holding listener.ts (written a minute ago). */
async function listening(source: string): Promise<Listening> {
  const dir = await mkdtemp(path.join(tmpdir(), "jetfn-listener-consumer-"));
  stopWhenTestEnds(() => rm(dir, { recursive: true, force: true }));
  const file = path.join(dir, "listener.ts");
  await writeFile(file, source);
  const writtenAt = new Date(Date.now() - 60_000);
  await utimes(file, writtenAt, writtenAt);
  const nats = await startNatsServer();
  const nc = await connect({ servers: nats.url });
  stopWhenTestEnds(() => nc.close());
  return { nats, manager: await jetstreamManager(nc), js: jetstream(nc), dir, file };
}

function start(dir: string, natsUrl: string, logs: CapturedLogger, watch = false): Promise<Runtime> {
  return startRuntime({
    natsUrl,
    databaseUrl: database.url,
    functionsDir: dir,
    logger: logs.logger,
    watch,
    shutdownGrace: "2s",
    productionChecks: false,
  }).then((runtime) => {
    stopWhenTestEnds(() => runtime.stop());
    return runtime;
  });
}

/** Writes `source` into `file` and waits until `runtime` has redeployed it. */
async function redeploy(runtime: Runtime, file: string, source: string): Promise<void> {
  const loaded = new Promise<void>((resolve) => runtime.events.once("function:loaded", () => resolve()));
  await writeFile(file, source);
  await loaded;
  await runtime.settled();
}

describe("a listener's consumer across redeploys", () => {
  it("keeps its position when onFrom changes, and warns once with the function's name", async () => {
    // onFrom was not compared: the consumer silently kept its start and nobody was told.
    const { nats, manager, js, dir, file } = await listening(listenerSource({ on: "ping.sent" }));
    const logs = captureLogs();
    const runtime = await start(dir, nats.url, logs, true);
    const consumer = () => manager.consumers.info("JETFN_EVENTS", "on-listener");
    const before = await consumer();
    const { seq } = await js.publish("fn.event.ping.sent", "{}");
    await eventually(async () => (await consumer()).ack_floor.stream_seq >= seq, 20_000);
    await redeploy(runtime, file, listenerSource({ on: "ping.sent", onFrom: "all" }));
    expect(logs.matching("onFrom changed")).toMatchObject([
      { level: 40, fn: "listener", onFrom: "all", consumerStart: "new", consumer: "on-listener" },
    ]);
    const after = await consumer();
    expect(after.created).toBe(before.created);
    expect(after.config.deliver_policy).toBe("new");
    expect(after.delivered.consumer_seq).toBe(1);
  });

  it("in a rolling deploy, warns about a kept start only from runtimes running the definition in force", async () => {
    // Each runtime compared the consumer with the settings in force, a newer runtime's: an older
    // one warned that its onFrom ("new") had changed from the consumer's ("new").
    const older = await listening(listenerSource({ on: "ping.sent" }));
    const newer = await mkdtemp(path.join(tmpdir(), "jetfn-listener-newer-"));
    stopWhenTestEnds(() => rm(newer, { recursive: true, force: true }));
    await writeFile(path.join(newer, "listener.ts"), listenerSource({ on: "ping.sent", onFrom: "all" }));
    const olderLogs = captureLogs();
    const newerLogs = captureLogs();
    await (await start(older.dir, older.nats.url, captureLogs())).stop();
    await start(newer, older.nats.url, newerLogs);
    await start(older.dir, older.nats.url, olderLogs);
    expect(newerLogs.matching("onFrom changed")).toMatchObject([{ onFrom: "all", consumerStart: "new" }]);
    expect(olderLogs.matching("onFrom changed")).toEqual([]);
  });

  it("brings max_ack_pending back to the runtime's when the consumer has another", async () => {
    // Only ack_wait, max_deliver and the description were compared: a consumer left with another
    // max_ack_pending (by hand, or by an older version) kept it.
    const { nats, manager, dir } = await listening(listenerSource({ on: "ping.sent" }));
    const first = await start(dir, nats.url, captureLogs());
    await first.stop();
    await manager.consumers.update("JETFN_EVENTS", "on-listener", { max_ack_pending: 7 });
    await start(dir, nats.url, captureLogs());
    const consumer = await manager.consumers.info("JETFN_EVENTS", "on-listener");
    expect(consumer.config.max_ack_pending).toBe(DEFAULT_MAX_ACK_PENDING);
  });

  it("deletes the consumer of a function that stops listening when the first delete is lost", async () => {
    // Every failure of the delete was swallowed: the consumer stayed, keeping its position for
    // when the function listened again.
    const { nats, manager, dir, file } = await listening(listenerSource({ on: "ping.sent" }));
    const subject = "$JS.API.CONSUMER.DELETE.JETFN_EVENTS.on-listener";
    const proxy = await losingFirst(nats.port, subject);
    const logs = captureLogs();
    const runtime = await start(dir, proxy.url, logs, true);
    await manager.consumers.info("JETFN_EVENTS", "on-listener");
    await redeploy(runtime, file, listenerSource({}));
    expect(proxy.dropped).toEqual([subject]);
    await expect(manager.consumers.info("JETFN_EVENTS", "on-listener")).rejects.toMatchObject({
      message: expect.stringMatching(/consumer not found/),
    });
    expect(logs.matching("NATS did not answer in time; asking again.").map((line) => line.request)).toEqual([
      "the deletion of the listener consumer of listener",
    ]);
  });

  it("in a rolling deploy, is not created again by a runtime still on a version that listened", async () => {
    // The newer runtime deleted the consumer of a function that stopped listening; the older one's
    // recovery created it again from its own definition, and with onFrom "all" it ran every kept
    // event once more. A restart of the older version did the same.
    const older = await listening(listenerSource({ on: "ping.sent", onFrom: "all" }));
    const newer = await mkdtemp(path.join(tmpdir(), "jetfn-listener-newer-"));
    stopWhenTestEnds(() => rm(newer, { recursive: true, force: true }));
    const newerFile = path.join(newer, "listener.ts");
    await writeFile(newerFile, listenerSource({ on: "ping.sent", onFrom: "all" }));
    const writtenAt = new Date(Date.now() - 60_000);
    await utimes(newerFile, writtenAt, writtenAt);
    const olderLogs = captureLogs();
    const newerRuntime = await start(newer, older.nats.url, captureLogs(), true);
    const olderRuntime = await start(older.dir, older.nats.url, olderLogs);
    let olderRuns = 0;
    olderRuntime.events.on("job:done", ({ fn }) => {
      if (fn === "listener") olderRuns++;
    });
    const consumer = () => older.manager.consumers.info("JETFN_EVENTS", "on-listener");
    const exists = () =>
      consumer().then(
        () => true,
        () => false,
      );
    const { seq } = await older.js.publish("fn.event.ping.sent", "{}");
    await eventually(async () => (await consumer()).ack_floor.stream_seq >= seq, 20_000);
    const runsBefore = olderRuns;

    await redeploy(newerRuntime, newerFile, listenerSource({}));
    // The older runtime's pull fails with its consumer, and its recovery asks for the consumer again.
    await eventually(async () => olderLogs.matching("does not create it").length > 0 || (await exists()), 20_000);
    expect(await exists()).toBe(false);
    expect(olderLogs.matching("does not create it")).toMatchObject([{ fn: "listener", kind: "events" }]);
    expect(olderRuns).toBe(runsBefore);

    const restartLogs = captureLogs();
    await olderRuntime.stop();
    await start(older.dir, older.nats.url, restartLogs);
    expect(await exists()).toBe(false);
    expect(restartLogs.matching("does not create it")).toHaveLength(1);
  });

  it("is deleted when the function stopped listening while no runtime ran it, and made anew when it listens again", async () => {
    // Only a redeploy seen by a running runtime deleted it: a runtime started on the changed file
    // left the consumer behind, keeping events for a listener that no longer existed.
    const { nats, manager, dir, file } = await listening(listenerSource({ on: "ping.sent" }));
    await (await start(dir, nats.url, captureLogs())).stop();
    await writeFile(file, listenerSource({}));
    const logs = captureLogs();
    const quiet = await start(dir, nats.url, logs);
    await expect(manager.consumers.info("JETFN_EVENTS", "on-listener")).rejects.toMatchObject({
      message: expect.stringMatching(/consumer not found/),
    });
    expect(logs.matching("no longer listens")).toMatchObject([{ fn: "listener", consumer: "on-listener" }]);
    await quiet.stop();

    // A later version that listens again is newer than the withdrawal: its consumer is created.
    const later = new Date(Date.now() + 60_000);
    await writeFile(file, listenerSource({ on: "ping.sent" }));
    await utimes(file, later, later);
    await start(dir, nats.url, captureLogs());
    expect((await manager.consumers.info("JETFN_EVENTS", "on-listener")).config.filter_subject).toBe(
      "fn.event.ping.sent",
    );
  });
});
