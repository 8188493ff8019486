import { AckPolicy, type JsMsg, jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { createFlowControl } from "../../runtime/flow/flow-control";
import { FLOW_BUCKET } from "../../runtime/flow/slot-board";
import { StreamPublisher } from "../../runtime/nats/stream-publisher";
import { SINGLE_REPLICA } from "../../runtime/nats/stream-replicas";
import { defineFunction, resolveFunction } from "../../runtime/sdk/define-function";
import { captureLogs } from "../helpers/logs";
import { startNatsServer, type TestNatsServer } from "../helpers/nats-server";

/**
 * Parking a job acks its original. If that ack were lost, the original would come back after the
 * ack wait and be parked a second time, under a new wake id: both copies would wake and run. The
 * gate waits for the server to confirm the ack, and sends it again when no confirmation came.
 */

let server: TestNatsServer;
let nc: NatsConnection;

beforeAll(async () => {
  server = await startNatsServer();
  nc = await connect({ servers: server.url });
});

afterAll(async () => {
  await nc?.close();
  await server?.stop();
});

/** The message as a network that loses its first ack makes it: ack() and ackAck() reach nobody. */
function losingFirstAck(message: JsMsg): JsMsg {
  return new Proxy(message, {
    get(target, property) {
      if (property === "ack") return () => {};
      if (property === "ackAck") return () => Promise.reject(new Error("TIMEOUT"));
      const value = Reflect.get(target, property, target);
      return typeof value === "function" && property !== "constructor" ? value.bind(target) : value;
    },
  }) as unknown as JsMsg;
}

describe("parking a job", () => {
  it("makes sure its original is acked, even when the first ack is lost", async () => {
    const manager = await jetstreamManager(nc);
    await manager.streams.add({ name: "ORIGINALS", subjects: ["originals.>"] });
    await manager.consumers.add("ORIGINALS", {
      durable_name: "jobs",
      ack_policy: AckPolicy.Explicit,
      ack_wait: 1_000_000_000, // 1 s: an unacked original would be back within the test
    });
    const fn = resolveFunction(
      "parked-once",
      "/functions/parked-once.ts",
      1,
      defineFunction({ input: z.object({}), concurrencyLimit: { limit: 1 }, async handler() {} } as never),
    );
    const flow = createFlowControl({
      nc,
      manager,
      publisher: new StreamPublisher(nc),
      jobStream: "JETFN_JOBS",
      logger: captureLogs().logger,
      replication: SINGLE_REPLICA,
      secret: "a-secret-for-this-test",
    });
    await flow.deployed(fn, fn.name);
    const bucket = await new Kvm(nc).open(FLOW_BUCKET);
    await bucket.put("c._.parked-once.0", JSON.stringify({ until: Date.now() + 3_600_000 }));
    await jetstream(nc).publish("originals.job", "{}");
    const consumer = await jetstream(nc).consumers.get("ORIGINALS", "jobs");
    const message = await consumer.next({ expires: 5_000 });
    expect(message).not.toBeNull();
    const job = { id: "job-parked-once", attempt: 1, enqueuedAt: new Date().toISOString() };
    await expect(flow.admit(fn, {}, job, losingFirstAck(message as JsMsg))).resolves.toBeUndefined();
    // Acked after all: nothing pending, and nothing comes back once the ack wait has passed.
    expect((await manager.consumers.info("ORIGINALS", "jobs")).num_ack_pending).toBe(0);
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    expect(await consumer.next({ expires: 1_000 })).toBeNull();
    expect((await manager.streams.info("JETFN_JOBS_WAITING")).state.messages).toBe(1);
    await flow.close();
  });
});
