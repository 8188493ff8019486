import { jetstreamManager } from "@nats-io/jetstream";
import { connect, headers, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, expect, it } from "vitest";
import { StreamPublisher } from "../../runtime/nats/stream-publisher";
import { startNatsServer, type TestNatsServer } from "../helpers/nats-server";

let nats: TestNatsServer;
let nc: NatsConnection;
let publisher: StreamPublisher;

beforeAll(async () => {
  nats = await startNatsServer();
  nc = await connect({ servers: nats.url });
  const manager = await jetstreamManager(nc);
  await manager.streams.add({ name: "PUBTEST", subjects: ["pub.>"], duplicate_window: 60_000_000_000 });
  publisher = new StreamPublisher(nc);
});

afterAll(async () => {
  publisher?.close();
  await nc?.close();
  await nats?.stop();
});

it("stores messages with their id and headers, and tells a repeat of an id", async () => {
  const tagged = headers();
  tagged.set("Jetfn-Id", "job-0001");
  const first = await publisher.publish("pub.a", "{}", { msgID: "job-0001", headers: tagged });
  const again = await publisher.publish("pub.a", "{}", { msgID: "job-0001" });
  const other = await publisher.publish("pub.b", "[1]", { msgID: "job-0002" });
  expect(first).toMatchObject({ stream: "PUBTEST", seq: 1, duplicate: false });
  expect(again).toMatchObject({ stream: "PUBTEST", seq: 1, duplicate: true });
  expect(other).toMatchObject({ stream: "PUBTEST", seq: 2, duplicate: false });
  const manager = await jetstreamManager(nc);
  const stored = await manager.streams.getMessage("PUBTEST", { seq: 1 });
  expect(stored?.header.get("Jetfn-Id")).toBe("job-0001");
  expect(stored?.header.get("Nats-Msg-Id")).toBe("job-0001");
});

it("says precisely when no stream stores the subject", async () => {
  await expect(publisher.publish("nowhere.x", "{}", { msgID: "job-0003" })).rejects.toMatchObject({
    code: "E_UNAVAILABLE",
    message: expect.stringContaining("no JetStream stream stores nowhere.x"),
  });
});

it("publishes many at once, each answered with its own sequence", async () => {
  const acks = await Promise.all(
    Array.from({ length: 300 }, (_, i) => publisher.publish("pub.many", `${i}`, { msgID: `many-${i}` })),
  );
  expect(new Set(acks.map((ack) => ack.seq)).size).toBe(300);
});
