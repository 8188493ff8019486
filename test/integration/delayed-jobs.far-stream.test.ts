import { randomUUID } from "node:crypto";
import { type JetStreamManager, jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection, headers as natsHeaders } from "@nats-io/transport-node";
import { afterAll, beforeAll, expect, it } from "vitest";
import {
  type DelayedJobMover,
  ensureDelayedJobs,
  farStreamName,
  findScheduledJob,
  removeScheduledJob,
  startDelayedJobMover,
} from "../../runtime/nats/delayed-jobs";
import { StreamPublisher } from "../../runtime/nats/stream-publisher";
import { eventually } from "../helpers/environment";
import { captureLogs } from "../helpers/logs";
import { startNatsServer, type TestNatsServer } from "../helpers/nats-server";

// Delayed jobs due later than the mover's near window wait in the far stream, so that after a
// nats-server restart the delayed-jobs consumer redelivers only the near ones. Here the window is
// 2 s (120 s in a runtime): a job due in 6 s goes to the far stream, comes back to
// jetfn.delayed.<id> 1 s before it is due, and moves to its function at its time, with its priority
// and first enqueue time kept, across a restart; it can be found and cancelled while far.
const NEAR_MS = 2_000;

let server: TestNatsServer;
let nc: NatsConnection;
let manager: JetStreamManager;
let stream: string;
let mover: DelayedJobMover;
const moved: { subject: string; id: string; at: number }[] = [];

beforeAll(async () => {
  server = await startNatsServer();
  nc = await connect({ servers: server.url, maxReconnectAttempts: -1, reconnectTimeWait: 100 });
  manager = await jetstreamManager(nc);
  await manager.streams.add({ name: "JETFN_JOBS", subjects: ["fn.job.>"] });
  stream = await ensureDelayedJobs(manager, "JETFN_JOBS");
  mover = startDelayedJobMover({
    js: jetstream(nc),
    publisher: new StreamPublisher(nc),
    stream,
    logger: captureLogs().logger,
    nearMs: NEAR_MS,
  });
  nc.subscribe("fn.job.>", {
    callback: (_error, message) => {
      moved.push({ subject: message.subject, id: message.headers?.get("Jetfn-Id") ?? "", at: Date.now() });
    },
  });
});

afterAll(async () => {
  await mover?.stop();
  await nc?.close();
  await server?.stop();
});

async function publishDelayed(due: number, extra: Record<string, string> = {}): Promise<string> {
  const id = `job-${randomUUID()}`;
  const header = natsHeaders();
  header.set("Jetfn-Id", id);
  header.set("Jetfn-Function", "send-mail");
  header.set("Jetfn-Not-Before", String(due));
  for (const [key, value] of Object.entries(extra)) header.set(key, value);
  await jetstream(nc).publish(`jetfn.delayed.${id}`, JSON.stringify({ id }), {
    headers: header,
    msgID: `send-mail:${id}`,
  });
  return id;
}

it("parks a far job in the far stream, brings it back near its time and moves it at its time, across a restart", {
  timeout: 60_000,
}, async () => {
  const enqueued = Date.now();
  const due = enqueued + 6_000;
  const id = await publishDelayed(due, { "Jetfn-Priority": "2" });
  const cancelled = await publishDelayed(due);
  const far = await eventually(async () => {
    const job = await findScheduledJob(manager, stream, id);
    return job?.stream === farStreamName(stream) ? job : undefined;
  }, 10_000);
  expect(far.fn).toBe("send-mail");
  expect(far.runAt).toBe(new Date(due).toISOString());
  // Status shows when it was enqueued, not when it moved.
  expect(Math.abs(Date.parse(far.enqueuedAt) - enqueued)).toBeLessThan(1_000);
  const cancel = await eventually(async () => {
    const job = await findScheduledJob(manager, stream, cancelled);
    return job?.stream === farStreamName(stream) ? job : undefined;
  }, 10_000);
  await removeScheduledJob(manager, cancel);
  await server.restart();
  const arrived = await eventually(async () => moved.find((entry) => entry.id === id), 30_000);
  expect(arrived.subject).toBe("fn.job.send-mail.P2");
  expect(arrived.at).toBeGreaterThanOrEqual(due);
  await new Promise((resolve) => setTimeout(resolve, 1_000));
  expect(moved.filter((entry) => entry.id === id)).toHaveLength(1);
  expect(moved.filter((entry) => entry.id === cancelled)).toEqual([]);
  await eventually(async () => {
    const [near, farInfo] = await Promise.all([
      manager.streams.info(stream),
      manager.streams.info(farStreamName(stream)),
    ]);
    return near.state.messages === 0 && farInfo.state.messages === 0;
  }, 10_000);
});

it("keeps a debounced job in the delayed-jobs stream, where its key's claim names it by sequence", {
  timeout: 30_000,
}, async () => {
  const due = Date.now() + 5_000;
  const id = await publishDelayed(due, { "Jetfn-Debounce-Key": "tenant-7" });
  const found = await eventually(async () => findScheduledJob(manager, stream, id), 5_000);
  await new Promise((resolve) => setTimeout(resolve, 1_000));
  expect((await findScheduledJob(manager, stream, id))?.stream).toBe(stream);
  expect(found.stream).toBe(stream);
  const arrived = await eventually(async () => moved.find((entry) => entry.id === id), 20_000);
  expect(arrived.at).toBeGreaterThanOrEqual(due);
});
