import { type JetStreamManager, jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { type StallWatch, startStallWatch, type WatchedPuller } from "../../runtime/nats/stall-watch";
import { consumerConfigFor } from "../../runtime/nats/streams";
import { consumerName, jobSubject } from "../../runtime/nats/subjects";
import { createEmitter } from "../../runtime/triggers/events";
import { type ApiRequestCounter, countApiRequests } from "../helpers/api-requests";
import { captureLogs } from "../helpers/logs";
import { startNatsServer, type TestNatsServer } from "../helpers/nats-server";

// The stall watch reads the stream's consumers with one listing per check (paged by the server),
// asks for a consumer on its own only when the listing leaves it out, and still finds each case:
// a missing consumer, jobs waiting with nothing delivered, max ack pending reached.

const STREAM = "STALLTEST";
const SETTINGS = { ack_wait: 30_000_000_000, max_deliver: 3, max_ack_pending: 100, description: "stall test" };

let nats: TestNatsServer;
let nc: NatsConnection;
let manager: JetStreamManager;
/** Consumer API requests seen on the server, by kind (INFO, LIST, ...). */
let requests: ApiRequestCounter;

/** A function's puller as the watch sees it, recording what the watch asked of it. */
interface FakePuller extends WatchedPuller {
  refreshed: number;
  recovered: number;
}

function puller(fn: string): FakePuller {
  const watched: FakePuller = {
    fn,
    held: 0,
    window: 2,
    refreshed: 0,
    recovered: 0,
    refresh() {
      watched.refreshed++;
    },
    async recover() {
      watched.recovered++;
      await manager.consumers.add(STREAM, consumerConfigFor(fn, SETTINGS));
    },
  };
  return watched;
}

function watch(pullers: FakePuller[]) {
  const events = createEmitter();
  const stalls: { fn: string; reason: string }[] = [];
  events.on("consumer:stalled", (event) => stalls.push(event));
  const stallWatch: StallWatch = startStallWatch({
    manager,
    stream: STREAM,
    pullers: () => pullers,
    intervalMs: 3_600_000,
    events,
    logger: captureLogs().logger,
  });
  return { stallWatch, stalls };
}

async function addConsumers(names: string[]): Promise<void> {
  for (const fn of names) await manager.consumers.add(STREAM, consumerConfigFor(fn, SETTINGS));
}

beforeAll(async () => {
  nats = await startNatsServer();
  nc = await connect({ servers: nats.url });
  manager = await jetstreamManager(nc);
  // Another connection's view of the consumer API: every request is a message on $JS.API.CONSUMER.<kind>.
  requests = await countApiRequests(nats.url, "$JS.API.CONSUMER.>", (subject) => subject.split(".")[3] ?? "");
});

beforeEach(async () => {
  await manager.streams.delete(STREAM).catch(() => false);
  await manager.streams.add({ name: STREAM, subjects: ["fn.job.>"] });
});

afterAll(async () => {
  await requests?.close();
  await nc?.close();
  await nats?.stop();
});

/** Consumer API requests of each kind that `action` made. */
async function counted(action: () => Promise<void>): Promise<Record<string, number>> {
  return (await requests.counted(nc, action)).made;
}

describe("the stall watch", () => {
  it("reads 300 consumers with one listing of two pages, not one request each", async () => {
    const names = Array.from({ length: 300 }, (_, index) => `fn-${index}`);
    await addConsumers(names);
    const pullers = names.map(puller);
    const { stallWatch, stalls } = watch(pullers);
    const made = await counted(() => stallWatch.check());
    await stallWatch.close();
    expect(made).toEqual({ LIST: 2 });
    expect(stalls).toEqual([]);
    expect(pullers.every((one) => one.refreshed === 0 && one.recovered === 0)).toBe(true);
  }, 60_000);

  it("creates a missing consumer again, after asking for it on its own", async () => {
    await addConsumers(["here", "gone"]);
    await manager.consumers.delete(STREAM, consumerName("gone"));
    const [here, gone] = [puller("here"), puller("gone")];
    const { stallWatch, stalls } = watch([here, gone]);
    const made = await counted(() => stallWatch.check());
    await stallWatch.close();
    expect(made).toMatchObject({ LIST: 1, INFO: 1 });
    expect(stalls).toEqual([{ fn: "gone", reason: "its consumer is missing; creating it again" }]);
    expect(gone).toMatchObject({ recovered: 1, refreshed: 1 });
    expect(here).toMatchObject({ recovered: 0, refreshed: 0 });
    expect((await manager.consumers.info(STREAM, consumerName("gone"))).config.filter_subject).toBe(jobSubject("gone"));
  });

  it("pulls again when jobs wait and nothing was delivered for a whole check", async () => {
    await addConsumers(["waits", "empty"]);
    const js = jetstream(nc);
    for (let index = 0; index < 3; index++) await js.publish(jobSubject("waits"), "{}");
    const [waits, empty] = [puller("waits"), puller("empty")];
    const { stallWatch, stalls } = watch([waits, empty]);
    await stallWatch.check();
    expect(waits.refreshed).toBe(0);
    await stallWatch.check();
    await stallWatch.close();
    expect(stalls).toEqual([
      { fn: "waits", reason: "3 job(s) wait but none was delivered in the last check; pulling again" },
    ]);
    expect(waits.refreshed).toBe(1);
    expect(empty.refreshed).toBe(0);
  });

  it("reports max ack pending reached once, without pulling again", async () => {
    await manager.consumers.add(STREAM, consumerConfigFor("full", { ...SETTINGS, max_ack_pending: 1 }));
    const js = jetstream(nc);
    for (let index = 0; index < 3; index++) await js.publish(jobSubject("full"), "{}");
    const consumer = await js.consumers.get(STREAM, consumerName("full"));
    const held = await consumer.next({ expires: 2_000 });
    expect(held).not.toBeNull();
    const full = puller("full");
    const { stallWatch, stalls } = watch([full]);
    await stallWatch.check();
    await stallWatch.check();
    await stallWatch.close();
    expect(stalls).toEqual([{ fn: "full", reason: "max ack pending (1) reached with 2 job(s) waiting" }]);
    expect(full.refreshed).toBe(0);
  });
});
