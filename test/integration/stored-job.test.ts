import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection, headers as natsHeaders } from "@nats-io/transport-node";
import { afterAll, beforeAll, expect, it } from "vitest";
import { findUnrecordedJob } from "../../runtime/nats/stored-job";
import { startNatsServer, type TestNatsServer } from "../helpers/nats-server";

// Finding a job the jobs stream holds and no runtime recorded yet (status, the dashboard's page of
// a pending job, the enqueue API's check of chosen ids) reads the messages past each function
// consumer's acknowledged floor. A subject without a consumer (a function no runtime deploys) is
// read from its own first message: one job published long ago to a valid but undeployed name made
// every look-up read from the stream's first message, up to its 20,000-message limit, and answer
// "cannot tell". And of two messages under one id, the one of the function asked about is shown.
let nats: TestNatsServer;
let nc: NatsConnection;

const STREAM = "JETFN_JOBS";
/** Past the look-up's limit of messages read. */
const ACKED = 20_500;

beforeAll(async () => {
  nats = await startNatsServer();
  nc = await connect({ servers: nats.url });
  const manager = await jetstreamManager(nc);
  await manager.streams.add({ name: STREAM, subjects: ["fn.job.>"] });
}, 60_000);

afterAll(async () => {
  await nc?.close();
  await nats?.stop();
});

async function publish(subject: string, id: string, extra: Record<string, string> = {}): Promise<void> {
  const header = natsHeaders();
  header.set("Jetfn-Id", id);
  for (const [name, value] of Object.entries(extra)) header.set(name, value);
  await jetstream(nc).publish(subject, "{}", { headers: header });
}

it("shows the job of the function asked about when another function's message has its id", async () => {
  await publish("fn.job.other", "shared-id-0001", { "Jetfn-Singleton-Key": "forged" });
  await publish("fn.job.own", "shared-id-0001", { "Jetfn-Singleton-Key": "real" });
  expect(await findUnrecordedJob(nc, STREAM, "shared-id-0001", "own")).toMatchObject({
    fn: "own",
    labels: { singletonKey: "real" },
  });
  // Without a function, the first stored is the id's (ids are first come, first served).
  expect(await findUnrecordedJob(nc, STREAM, "shared-id-0001")).toMatchObject({ fn: "other" });
});

it("finds a queued job past many recorded ones, though an undeployed function kept an old job", {
  timeout: 120_000,
}, async () => {
  const js = jetstream(nc);
  const manager = await jetstreamManager(nc);
  await publish("fn.job.typo", "typo-job-0001");
  let sent: Promise<unknown>[] = [];
  for (let n = 0; n < ACKED; n++) {
    const header = natsHeaders();
    header.set("Jetfn-Id", `done-${n}`);
    sent.push(js.publish("fn.job.busy", "{}", { headers: header }));
    if (sent.length === 1_000) {
      await Promise.all(sent);
      sent = [];
    }
  }
  await Promise.all(sent);
  // The deployed function's consumer has run (and so recorded) every one of them.
  await manager.consumers.add(STREAM, {
    durable_name: "busy",
    filter_subject: "fn.job.busy",
    ack_policy: AckPolicy.All,
    deliver_policy: DeliverPolicy.All,
  });
  const consumer = await js.consumers.get(STREAM, "busy");
  for (let acked = 0; acked < ACKED; ) {
    // At most the consumer's 1,000 unacknowledged messages a batch.
    const batch = await consumer.fetch({ max_messages: 1_000, expires: 2_000 });
    let last: { ack(): void } | undefined;
    for await (const message of batch) {
      last = message;
      acked++;
    }
    last?.ack();
  }
  await publish("fn.job.busy", "queued-job-0001", { "Jetfn-Debounce-Key": "doc:1" });
  expect(await findUnrecordedJob(nc, STREAM, "queued-job-0001")).toMatchObject({
    fn: "busy",
    labels: { debounceKey: "doc:1" },
  });
  expect(await findUnrecordedJob(nc, STREAM, "typo-job-0001")).toMatchObject({ fn: "typo" });
  expect(await findUnrecordedJob(nc, STREAM, "done-7")).toBe(false);
});
