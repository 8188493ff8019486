import { DeliverPolicy, type JetStreamManager, jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { createPriorityBacklog } from "../../runtime/flow/priority-backlog";
import { ensurePriorityConsumer } from "../../runtime/flow/priority-consumers";
import { consumerConfigFor } from "../../runtime/nats/streams";
import { type ApiRequestCounter, countApiRequests } from "../helpers/api-requests";
import { startNatsServer, type TestNatsServer } from "../helpers/nats-server";

// Which priority levels have jobs waiting is read for every function of a runtime together: one
// stream info listing the stored job subjects and one read of the consumers of the levels that
// need it, however many functions ask at once (all of them, after a reconnect).

const STREAM = "BACKLOGTEST";
const SETTINGS = { ack_wait: 30_000_000_000, max_deliver: 3, max_ack_pending: 100, description: "backlog test" };

let nats: TestNatsServer;
let nc: NatsConnection;
let manager: JetStreamManager;
let requests: ApiRequestCounter;

beforeAll(async () => {
  nats = await startNatsServer();
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
});

/** API requests of each kind that `action` made, and what it returned. */
function counted<T>(action: () => Promise<T>): Promise<{ made: Record<string, number>; result: T }> {
  return requests.counted(nc, action);
}

async function publish(subject: string, count = 1): Promise<void> {
  const js = jetstream(nc);
  for (let index = 0; index < count; index++) await js.publish(subject, "{}");
}

describe("the priority backlog", () => {
  it("answers 300 functions asking at once with one stream info and one listing of their consumers", async () => {
    const names = Array.from({ length: 300 }, (_, index) => `fn-${index}`);
    // Each function's own consumer: 300 of them make the listing two pages.
    for (const fn of names) await manager.consumers.add(STREAM, consumerConfigFor(fn, SETTINGS));
    // fn-1: a P2 job and no level consumer yet. fn-2: its P3 consumer has a job to deliver.
    await publish("fn.job.fn-1.P2");
    await publish("fn.job.fn-2.P3", 2);
    await ensurePriorityConsumer(manager, STREAM, "fn-2", 3, SETTINGS);
    // fn-3: its P1 job was taken (its consumer starts after it). fn-4: its P2 level is pulled already.
    await publish("fn.job.fn-3.P1");
    await manager.consumers.add(STREAM, {
      ...consumerConfigFor("fn-3", SETTINGS),
      durable_name: "fn-3:P1",
      filter_subject: "fn.job.fn-3.P1",
      deliver_policy: DeliverPolicy.New,
    });
    await publish("fn.job.fn-4.P2");
    // Names with dots: `fn-5.x`'s levels are not `fn-5`'s, and `fn-5`'s are not `fn-5.x`'s.
    await publish("fn.job.fn-5.x.P3");
    await publish("fn.job.fn-5.P1");
    const asked = [...names, "fn-5.x"];
    const backlog = createPriorityBacklog(manager, STREAM);
    const { made, result } = await counted(() =>
      Promise.all(asked.map((fn) => backlog.waitingLevels(fn, fn === "fn-4" ? [2] : []))),
    );
    const waiting: Record<string, number[]> = {};
    for (const [index, fn] of asked.entries()) if (result[index]?.length) waiting[fn] = result[index];
    expect(waiting).toEqual({ "fn-1": [2], "fn-2": [3], "fn-5": [1], "fn-5.x": [3] });
    // The three levels with no consumer are asked for on their own before they count as having none:
    // on a cluster a listing leaves out consumers whose leader did not answer.
    expect(made).toEqual({ "STREAM.INFO": 1, "CONSUMER.LIST": 2, "CONSUMER.INFO": 3 });
  }, 60_000);

  it("asks for one function's levels with a filter of its own and each consumer on its own", async () => {
    await publish("fn.job.alone.P2");
    await publish("fn.job.other.P3");
    await ensurePriorityConsumer(manager, STREAM, "alone", 2, SETTINGS);
    const backlog = createPriorityBacklog(manager, STREAM);
    const { made, result } = await counted(() => backlog.waitingLevels("alone", []));
    expect(result).toEqual([2]);
    expect(made).toEqual({ "STREAM.INFO": 1, "CONSUMER.INFO": 1 });
  });

  it("answers a function asking during a read with the next read, not the one under way", async () => {
    await publish("fn.job.late.P1");
    const backlog = createPriorityBacklog(manager, STREAM);
    const { made, result } = await counted(async () => {
      const first = backlog.waitingLevels("early", []);
      // The first read (of `early`'s subjects only) has started, after the current task.
      await new Promise((resolve) => setImmediate(resolve));
      const second = backlog.waitingLevels("late", []);
      return Promise.all([first, second]);
    });
    expect(result).toEqual([[], [1]]);
    expect(made).toEqual({ "STREAM.INFO": 2, "CONSUMER.INFO": 1 });
  });

  it("fails every question while the stream cannot be read", async () => {
    await manager.streams.delete(STREAM);
    const backlog = createPriorityBacklog(manager, STREAM);
    const answers = await Promise.allSettled([backlog.waitingLevels("a", []), backlog.waitingLevels("b", [])]);
    expect(answers.map((answer) => answer.status)).toEqual(["rejected", "rejected"]);
  });
});
