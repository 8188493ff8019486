import { AckPolicy, jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { expect, it } from "vitest";
import {
  createJobPuller,
  IDLE_FETCH_EXPIRES_MS,
  IDLE_PULL_HEARTBEAT_MS,
  type JobPuller,
} from "../../runtime/nats/job-puller";
import { eventually } from "../helpers/environment";
import { captureLogs } from "../helpers/logs";
import { startNatsServer } from "../helpers/nats-server";
import { stopWhenTestEnds } from "../helpers/test-scope";

// A pull request can be lost without a word to the client (the server that held it forgot it): only
// missing heartbeats tell. nats.js ends a fetch once two heartbeats are missed, checking once a
// heartbeat period, so 2-3 periods after the server's last message. An idle puller's pull must be
// given up that way before it would have expired: a 15 s heartbeat on a 30 s pull never did.

const STREAM = "IDLE_PULLS";
const USER = { user: "puller", password: "idle-pull-test" };
// The server drops the pull requests of consumer `silent`: its user may not publish them.
const CONFIG = `authorization { users = [ { user: "${USER.user}", password: "${USER.password}", permissions: {
  publish: { allow: [">"], deny: ["$JS.API.CONSUMER.MSG.NEXT.${STREAM}.silent"] } } } ] }`;

async function serverWithConsumers(): Promise<NatsConnection> {
  const nats = await startNatsServer({ config: CONFIG, ...USER });
  const nc = await connect({ servers: nats.url, user: USER.user, pass: USER.password });
  stopWhenTestEnds(() => nc.close());
  const manager = await jetstreamManager(nc);
  await manager.streams.add({ name: STREAM, subjects: ["idle.>"] });
  for (const name of ["heard", "silent"]) {
    await manager.consumers.add(STREAM, { durable_name: name, ack_policy: AckPolicy.Explicit });
  }
  return nc;
}

function startPuller(nc: NatsConnection, consumer: string, logger = captureLogs().logger): JobPuller {
  const puller = createJobPuller({
    js: jetstream(nc),
    stream: STREAM,
    consumer,
    fn: consumer,
    concurrency: () => 1,
    heartbeatMs: () => 10_000,
    handle: async () => {},
    recover: async () => {},
    logger,
  });
  puller.start();
  stopWhenTestEnds(() => puller.stop());
  return puller;
}

it("asks for idle pulls that outlive three heartbeat periods", async () => {
  const nc = await serverWithConsumers();
  const asked: { expires: number; idle_heartbeat: number }[] = [];
  nc.subscribe(`$JS.API.CONSUMER.MSG.NEXT.${STREAM}.heard`, {
    callback: (_error, message) => {
      asked.push(message.json());
    },
  });
  await nc.flush();
  startPuller(nc, "heard");
  const [pull] = await eventually(() => (asked.length > 0 ? asked : undefined));
  // Three heartbeat periods after the server's last message, a lost pull is given up: before its end.
  expect(3 * (pull?.idle_heartbeat ?? Number.POSITIVE_INFINITY)).toBeLessThan(pull?.expires ?? 0);
});

it("gives up an idle pull that gets no answer within three heartbeats, before it would expire", async () => {
  const nc = await serverWithConsumers();
  const logs = captureLogs();
  const started = performance.now();
  startPuller(nc, "silent", logs.logger);
  const failed = await eventually(() => logs.matching("A pull request for jobs failed").at(0), 55_000);
  const elapsedMs = performance.now() - started;
  expect(String((failed.err as { message?: string }).message)).toContain("heartbeats missed");
  expect(elapsedMs).toBeLessThan(3 * IDLE_PULL_HEARTBEAT_MS + 2_000);
  expect(elapsedMs).toBeLessThan(IDLE_FETCH_EXPIRES_MS);
}, 75_000);
