import { mkdtemp, rm, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Runtime, startRuntime } from "../../runtime/runtime";
import { createTestDatabase, type TestDatabase } from "../helpers/database";
import { type DroppingProxy, losingFirst, startDroppingProxy } from "../helpers/dropping-proxy";
import { CLUSTER_FUNCTIONS, eventually, startClusterFunctionsRuntime } from "../helpers/environment";
import { type CapturedLogger, captureLogs } from "../helpers/logs";
import { startNatsServer, type TestNatsOptions } from "../helpers/nats-server";
import { stopWhenTestEnds } from "../helpers/test-scope";

// On a loaded machine (2 cores beside two CPU burners) a runtime's start failed on one JetStream
// request that NATS did not answer within its 5 s. Here the request is lost on the way (a proxy
// drops it), so the server never answers it: before the start-up retry, a single lost request
// failed the start for about half of the ~40 management requests a start makes (account info,
// stream and consumer creates, key-value buckets); a lost consumer create of a function left it
// without its consumer until its puller recovered it.

let database: TestDatabase;

beforeAll(async () => {
  database = await createTestDatabase();
});

afterAll(async () => {
  await database?.drop();
});

interface Start {
  runtime?: Runtime;
  error?: Error;
  proxy: DroppingProxy;
  logs: CapturedLogger;
  natsUrl: string;
}

/** A functions folder of the test's own, removed when the test ends. */
async function functionsFolder(): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), "jetfn-start-unanswered-"));
  stopWhenTestEnds(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** Writes function file `file` into `dir`, dated `writtenAt` (runtimes keep the newest definition's settings). */
async function writeFunction(dir: string, file: string, source: string, writtenAt: Date): Promise<void> {
  await writeFile(path.join(dir, file), source);
  await utimes(path.join(dir, file), writtenAt, writtenAt);
}

/** Writes listener.ts into `dir`, listening to `on`, dated `writtenAt`. */
function writeListener(dir: string, on: string, writtenAt: Date): Promise<void> {
  return writeFunction(
    dir,
    "listener.ts",
    `import { defineFunction, z } from "jetfn";
export default defineFunction({ on: "${on}", input: z.object({}), async handler() { return null; } });
`,
    writtenAt,
  );
}

/** How these tests start a runtime on the functions in `dir`. */
function folderOptions(dir: string) {
  return { databaseUrl: database.url, functionsDir: dir, shutdownGrace: "2s", productionChecks: false };
}

/**
 * Starts a runtime on the functions in `dir` through a proxy to the nats-server on `natsPort` that
 * loses the first request to `subject`, and checks that it lost one.
 */
async function startDirLosing(dir: string, natsPort: number, subject: string): Promise<CapturedLogger> {
  const proxy = await losingFirst(natsPort, subject);
  const logs = captureLogs();
  const runtime = await startRuntime({ ...folderOptions(dir), natsUrl: proxy.url, logger: logs.logger });
  stopWhenTestEnds(() => runtime.stop());
  expect(proxy.dropped).toEqual([subject]);
  return logs;
}

/** Starts a runtime on a fresh nats-server through a proxy that loses the first request to `subject`. */
async function startLosing(subject: string, natsOptions: TestNatsOptions = {}): Promise<Start> {
  const nats = await startNatsServer(natsOptions);
  const proxy = await losingFirst(nats.port, subject);
  const logs = captureLogs();
  try {
    const runtime = await startClusterFunctionsRuntime({
      natsUrl: proxy.url,
      natsUser: natsOptions.user,
      natsPassword: natsOptions.password,
      databaseUrl: database.url,
      logger: logs.logger,
    });
    return { runtime, proxy, logs, natsUrl: nats.url };
  } catch (error) {
    return { error: error as Error, proxy, logs, natsUrl: nats.url };
  }
}

/** The warnings of requests asked again, by what they asked for. */
function askedAgain(logs: CapturedLogger): unknown[] {
  return logs.matching("NATS did not answer in time; asking again.").map((line) => line.request);
}

describe("a runtime whose start-up request NATS does not answer in time", () => {
  it.each([
    ["the JetStream account info (its first request)", "$JS.API.INFO", "the JetStream account info"],
    [
      "the delayed-jobs consumer's create",
      "$JS.API.CONSUMER.CREATE.JETFN_JOBS_DELAYED.jetfn-delayed",
      "the delayed-jobs streams and their consumers",
    ],
    ["a key-value bucket's create", "$JS.API.STREAM.CREATE.KV_JETFN_CANCELS", "the bucket JETFN_CANCELS and its watch"],
    [
      "the read of the schedules' secret",
      "$JS.API.DIRECT.GET.KV_JETFN_SCHEDULES.$KV.JETFN_SCHEDULES.Secret",
      "the bucket JETFN_SCHEDULES and the schedules' secret",
    ],
  ])("asks again when %s is lost, and starts", async (_, subject, request) => {
    const start = await startLosing(subject);
    expect(start.proxy.dropped).toEqual([subject]);
    expect(start.error).toBeUndefined();
    expect(start.runtime?.registry.names().sort()).toEqual(["add", "fault-insert"]);
    expect(askedAgain(start.logs)).toEqual([request]);
  });

  it("deploys a function whose consumer create is lost with its consumer in place", async () => {
    const subject = "$JS.API.CONSUMER.CREATE.JETFN_JOBS.add.fn.job.add";
    const start = await startLosing(subject);
    expect(start.proxy.dropped).toEqual([subject]);
    expect(start.error).toBeUndefined();
    // Asked again during the deploy, not left to the puller's recovery after the start.
    const nc = await connect({ servers: start.natsUrl });
    try {
      const consumer = await (await jetstreamManager(nc)).consumers.info("JETFN_JOBS", "add");
      expect(consumer.config.filter_subject).toBe("fn.job.add");
    } finally {
      await nc.close();
    }
    expect(askedAgain(start.logs)).toEqual(["the consumer of add"]);
  });

  it("updates a function's priority consumers when a try changed its own consumer and then went unanswered", async () => {
    // A redeployed retry policy: the first try updates `steady` and loses the update of `steady:P2`;
    // the next try finds `steady` current, and must still bring its priority consumer along.
    const dir = await functionsFolder();
    const version = (attempts: number, writtenAt: Date) =>
      writeFunction(
        dir,
        "steady.ts",
        `import { defineFunction, z } from "jetfn";
export default defineFunction({ input: z.object({}), retry: { attempts: ${attempts} }, async handler() { return null; } });
`,
        writtenAt,
      );
    await version(2, new Date(Date.now() - 60_000));
    const nats = await startNatsServer();
    const first = await startRuntime({ ...folderOptions(dir), natsUrl: nats.url, logger: captureLogs().logger });
    const nc = await connect({ servers: nats.url });
    stopWhenTestEnds(() => nc.close());
    const manager = await jetstreamManager(nc);
    await jetstream(nc).publish("fn.job.steady.P2", "{}");
    const maxDeliver = async (name: string) => (await manager.consumers.info("JETFN_JOBS", name)).config.max_deliver;
    await eventually(
      () =>
        maxDeliver("steady:P2")
          .then((deliveries) => deliveries === 3)
          .catch(() => false),
      20_000,
    );
    await first.stop();
    await version(4, new Date());
    const logs = await startDirLosing(dir, nats.port, "$JS.API.CONSUMER.CREATE.JETFN_JOBS.steady:P2.fn.job.steady.P2");
    expect(askedAgain(logs)).toEqual(["the consumer of steady"]);
    expect(await maxDeliver("steady")).toBe(5);
    expect(await maxDeliver("steady:P2")).toBe(5);
  });

  it("replaces a listener's consumer for its new pattern when the consumer's info is lost", async () => {
    // Any failure of the info was taken for a missing consumer, and a create followed: refused on a
    // server that has the consumer (2.10+), or, on 2.9, an update that moved the filter in place, so
    // the consumer did not start anew per onFrom and delivered events of the new pattern stored
    // before the deploy.
    const dir = await functionsFolder();
    await writeListener(dir, "ping.sent", new Date(Date.now() - 60_000));
    const nats = await startNatsServer();
    const first = await startRuntime({ ...folderOptions(dir), natsUrl: nats.url, logger: captureLogs().logger });
    await first.stop();
    const nc = await connect({ servers: nats.url });
    stopWhenTestEnds(() => nc.close());
    const js = jetstream(nc);
    await js.publish("fn.event.pong.sent", "{}"); // Before the new pattern's deploy: not for it (onFrom "new").
    await writeListener(dir, "pong.sent", new Date());
    const logs = await startDirLosing(dir, nats.port, "$JS.API.CONSUMER.INFO.JETFN_EVENTS.on-listener");
    const manager = await jetstreamManager(nc);
    const consumer = () => manager.consumers.info("JETFN_EVENTS", "on-listener");
    expect((await consumer()).config.filter_subject).toBe("fn.event.pong.sent");
    const { seq } = await js.publish("fn.event.pong.sent", "{}");
    const handled = await eventually(async () => {
      const info = await consumer();
      return info.ack_floor.stream_seq >= seq ? info : undefined;
    }, 20_000);
    expect(handled.delivered.consumer_seq).toBe(1);
    expect(askedAgain(logs)).toEqual(["the listener consumer of listener"]);
    expect(logs.matching("its consumer was replaced")).toHaveLength(1);
  });

  it("warns that a listener's consumer was replaced when the create after the delete is lost", async () => {
    // The delete of the old pattern's consumer was answered and the create lost: the next try found
    // no consumer, created one and reported "created", so the replacement went untold.
    const dir = await functionsFolder();
    await writeListener(dir, "ping.sent", new Date(Date.now() - 60_000));
    const nats = await startNatsServer();
    const first = await startRuntime({ ...folderOptions(dir), natsUrl: nats.url, logger: captureLogs().logger });
    await first.stop();
    await writeListener(dir, "pong.sent", new Date());
    const logs = await startDirLosing(
      dir,
      nats.port,
      "$JS.API.CONSUMER.CREATE.JETFN_EVENTS.on-listener.fn.event.pong.sent",
    );
    const nc = await connect({ servers: nats.url });
    stopWhenTestEnds(() => nc.close());
    const consumer = await (await jetstreamManager(nc)).consumers.info("JETFN_EVENTS", "on-listener");
    expect(consumer.config.filter_subject).toBe("fn.event.pong.sent");
    expect(askedAgain(logs)).toEqual(["the listener consumer of listener"]);
    expect(logs.matching("its consumer was replaced")).toMatchObject([{ fn: "listener", on: "pong.sent" }]);
  });

  it("waits out NATS's silence once per start, not once per function, and makes the consumers once it answers", {
    timeout: 120_000,
  }, async () => {
    // Deploys run one after another: with every consumer create lost, each function waited the
    // whole 30 s again (500 functions: four hours). The first waits; the next try once, and their
    // pullers make the consumers when NATS answers again.
    const creates = ["add", "fault-insert"].map((fn) => `$JS.API.CONSUMER.CREATE.JETFN_JOBS.${fn}.fn.job.${fn}`);
    const nats = await startNatsServer();
    let silent = true;
    const proxy = await startDroppingProxy(nats.port, (published) => silent && creates.includes(published));
    const logs = captureLogs();
    const runtime = await startRuntime({
      natsUrl: proxy.url,
      databaseUrl: database.url,
      functionsDir: CLUSTER_FUNCTIONS,
      logger: logs.logger,
      shutdownGrace: "2s",
      productionChecks: false,
    });
    stopWhenTestEnds(() => runtime.stop());
    const waited = new Set(askedAgain(logs));
    expect(waited.size).toBe(1);
    expect(runtime.registry.names().sort()).toEqual(["add", "fault-insert"]);
    silent = false;
    const nc = await connect({ servers: nats.url });
    stopWhenTestEnds(() => nc.close());
    const manager = await jetstreamManager(nc);
    for (const fn of ["add", "fault-insert"]) {
      await eventually(
        () =>
          manager.consumers.info("JETFN_JOBS", fn).then(
            () => true,
            () => false,
          ),
        30_000,
      );
    }
  });

  it("fails at once, without asking again, when the account has no JetStream", async () => {
    const user = { user: "no-jetstream", password: "no-jetstream" };
    const start = await startLosing("nothing", {
      config: `accounts { PLAIN: { users: [ { user: "${user.user}", password: "${user.password}" } ] } }`,
      ...user,
    });
    expect(start.runtime).toBeUndefined();
    expect(start.error?.message).toMatch(/does not offer JetStream/);
    expect(askedAgain(start.logs)).toEqual([]);
  });
});
