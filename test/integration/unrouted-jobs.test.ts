import { type JetStreamManager, jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { consumerConfigFor } from "../../runtime/nats/streams";
import { startUnroutedJobs } from "../../runtime/nats/unrouted-jobs";
import { type ApiRequestCounter, countApiRequests } from "../helpers/api-requests";
import { createTestDatabase, type TestDatabase } from "../helpers/database";
import { captureLogs } from "../helpers/logs";
import { startNatsServer, type TestNatsServer } from "../helpers/nats-server";

// The unrouted-jobs sweep reports the jobs waiting for functions this runtime does not deploy
// (deployed by other runtimes, or not yet): their consumers are read together, with one listing
// for many, not one info request per function and sweep; and once per function, whatever
// subjects (its own, its priority levels') its jobs are stored on.

const STREAM = "UNROUTEDTEST";
const SETTINGS = { ack_wait: 30_000_000_000, max_deliver: 3, max_ack_pending: 100, description: "unrouted test" };

let nats: TestNatsServer;
let database: TestDatabase;
let nc: NatsConnection;
let manager: JetStreamManager;
let requests: ApiRequestCounter;

beforeAll(async () => {
  [nats, database] = await Promise.all([startNatsServer(), createTestDatabase()]);
  nc = await connect({ servers: nats.url });
  manager = await jetstreamManager(nc);
  requests = await countApiRequests(nats.url);
});

beforeEach(async () => {
  await manager.streams.delete(STREAM).catch(() => false);
  await manager.streams.add({ name: STREAM, subjects: ["fn.job.>"] });
});

afterAll(async () => {
  await requests?.close();
  await nc?.close();
  await nats?.stop();
  await database?.drop();
});

function sweeper() {
  const logs = captureLogs();
  const unrouted = startUnroutedJobs({
    nc,
    manager,
    sql: database.sql,
    stream: STREAM,
    deployed: () => [],
    intervalMs: 3_600_000,
    logger: logs.logger,
  });
  return { unrouted, waitingLines: () => logs.lines.filter((line) => String(line.msg).includes("wait for function")) };
}

/** API requests of each kind that `action` made. */
async function counted(action: () => Promise<unknown>): Promise<Record<string, number>> {
  return (await requests.counted(nc, action)).made;
}

describe("the unrouted-jobs sweep", () => {
  it("reads the consumers of 300 undeployed functions with one listing, not one request each", async () => {
    const names = Array.from({ length: 300 }, (_, index) => `elsewhere-${index}`);
    const js = jetstream(nc);
    for (const fn of names) {
      await manager.consumers.add(STREAM, consumerConfigFor(fn, SETTINGS));
      await js.publish(`fn.job.${fn}`, "{}");
    }
    const { unrouted, waitingLines } = sweeper();
    const made = await counted(() => unrouted.sweep());
    await unrouted.close();
    expect(made).toEqual({ "STREAM.INFO": 1, "CONSUMER.LIST": 2 });
    expect(waitingLines()).toHaveLength(300);
    expect(waitingLines()[0]).toMatchObject({ fn: "elsewhere-0", waiting: 1, everDeployed: true });
  }, 60_000);

  it("reports a function's jobs on its own and its priority subjects once, and not again unchanged", async () => {
    const js = jetstream(nc);
    await js.publish("fn.job.mixed", "{}");
    await js.publish("fn.job.mixed", "{}");
    await js.publish("fn.job.mixed.P2", "{}");
    const { unrouted, waitingLines } = sweeper();
    await unrouted.sweep();
    await unrouted.sweep();
    await unrouted.close();
    expect(waitingLines()).toMatchObject([{ fn: "mixed", waiting: 3, everDeployed: false }]);
  });
});
