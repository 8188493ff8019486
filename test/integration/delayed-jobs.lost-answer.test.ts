import { randomUUID } from "node:crypto";
import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager, RetentionPolicy } from "@nats-io/jetstream";
import { connect, headers as natsHeaders } from "@nats-io/transport-node";
import { expect, it } from "vitest";
import { delayedStreamName, ensureDelayedJobs, startDelayedJobMover } from "../../runtime/nats/delayed-jobs";
import { StreamPublisher } from "../../runtime/nats/stream-publisher";
import { toNanos } from "../../runtime/support/duration";
import { eventually } from "../helpers/environment";
import { captureLogs } from "../helpers/logs";
import { startNatsServer } from "../helpers/nats-server";

// A delayed message delivered to a runtime that never answered (it died, or nats-server restarted
// before the answer arrived) comes back after the consumer's ack wait. At 30 s, a job due 8 s after
// a restart moved 21 s late; the consumers now wait 2 s, and a consumer made by an earlier version
// (30 s) is changed when a runtime of this one starts.
it("moves a job at its time when the runtime it was delivered to never answered", { timeout: 60_000 }, async () => {
  const server = await startNatsServer();
  const nc = await connect({ servers: server.url });
  const manager = await jetstreamManager(nc);
  const js = jetstream(nc);
  await manager.streams.add({ name: "JETFN_JOBS", subjects: ["fn.job.>"] });
  // The consumer as an earlier version made it.
  const stream = delayedStreamName("JETFN_JOBS");
  await manager.streams.add({ name: stream, subjects: ["jetfn.delayed.>"], retention: RetentionPolicy.Workqueue });
  await manager.consumers.add(stream, {
    durable_name: "jetfn-delayed",
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.All,
    ack_wait: toNanos(30_000),
    max_deliver: -1,
    max_ack_pending: -1,
  });
  await ensureDelayedJobs(manager, "JETFN_JOBS");
  const id = `job-${randomUUID()}`;
  const due = Date.now() + 6_000;
  const header = natsHeaders();
  header.set("Jetfn-Id", id);
  header.set("Jetfn-Function", "send-mail");
  header.set("Jetfn-Not-Before", String(due));
  await js.publish(`jetfn.delayed.${id}`, "{}", { headers: header, msgID: `send-mail:${id}` });
  // A runtime takes the job and is gone before it answers.
  const taken = await (await js.consumers.get(stream, "jetfn-delayed")).next({ expires: 5_000 });
  expect(taken?.headers?.get("Jetfn-Id")).toBe(id);
  const moved: number[] = [];
  const subscription = nc.subscribe("fn.job.>", {
    callback: () => {
      moved.push(Date.now());
    },
  });
  const mover = startDelayedJobMover({ js, publisher: new StreamPublisher(nc), stream, logger: captureLogs().logger });
  try {
    await eventually(() => moved.length > 0, 30_000);
    expect(moved[0]).toBeGreaterThanOrEqual(due);
    // Back after the ack wait, well before its time: parked again and moved on time (not at 30 s).
    expect((moved[0] as number) - due).toBeLessThan(5_000);
  } finally {
    subscription.unsubscribe();
    await mover.stop();
    await nc.close();
  }
});
