import { Kvm } from "@nats-io/kv";
import { connect } from "@nats-io/transport-node";
import { describe, expect, it, onTestFinished } from "vitest";
import { FLOW_BUCKET, openSlotBoard } from "../../runtime/flow/slot-board";
import { CANCEL_BUCKET, openCancellations } from "../../runtime/invocation/cancellation";
import { eventually } from "../helpers/environment";
import { captureLogs } from "../helpers/logs";
import { dropWatches, startPermissionedNatsServer } from "../helpers/nats-permissions";
import { startNatsServer } from "../helpers/nats-server";

const MINUTE = 60_000;

/** Two connections to a server whose watches the test can drop: the runtime's, and another runtime's. */
async function connections() {
  const server = await startPermissionedNatsServer();
  const [own, other] = [await server.connect(), await server.connect()];
  onTestFinished(async () => {
    await Promise.all([own.close(), other.close()]);
  });
  return { server, own, other };
}

describe("bucket watches (nats/buckets.ts watchBucket)", () => {
  it("the slot board watches again after the server dropped its watch, and is current again", async () => {
    const { server, own, other } = await connections();
    const logs = captureLogs();
    const board = await openSlotBoard(own, logs.logger);
    onTestFinished(() => board.close());
    await dropWatches(server, other, `KV_${FLOW_BUCKET}`);
    const bucket = await new Kvm(other).open(FLOW_BUCKET);
    await bucket.put("c.k_later.f.0", JSON.stringify({ until: Date.now() + MINUTE }));
    await eventually(() => board.occupied("c.k_later.f", 1) === 1, 20_000);
    // And it keeps hearing changes.
    await bucket.put("c.k_later.f.0", JSON.stringify({ until: 0 }));
    await eventually(() => board.occupied("c.k_later.f", 1) === 0, 20_000);
    expect(logs.matching("Watching flow-control slots stopped; watching again.").length).toBeGreaterThan(0);
  });

  it("cancellations watch again after the server dropped their watch: a mark written since aborts its job", async () => {
    const { server, own, other } = await connections();
    const cancellations = await openCancellations(own, captureLogs().logger);
    onTestFinished(() => cancellations.close());
    const aborted = new Promise<string>((resolve) => {
      cancellations.watch("job-after-drop-1", (reason) => resolve(reason.code));
    });
    await dropWatches(server, other, `KV_${CANCEL_BUCKET}`);
    // Marked by another runtime (the cancel API answered there).
    const marks = await openCancellations(other, captureLogs().logger);
    onTestFinished(() => marks.close());
    await marks.mark("job-after-drop-1", "not needed");
    await eventually(() => cancellations.cancelled("job-after-drop-1") !== undefined, 20_000);
    expect(await aborted).toBe("E_CANCELLED");
  });

  it("the slot board is current again after its nats-server restarts", async () => {
    const server = await startNatsServer();
    const options = { servers: server.url, maxReconnectAttempts: -1, reconnectTimeWait: 250 };
    const own = await connect(options);
    const other = await connect(options);
    onTestFinished(async () => {
      await Promise.all([own.close(), other.close()]);
    });
    const board = await openSlotBoard(own, captureLogs().logger);
    onTestFinished(() => board.close());
    await server.restart();
    const bucket = await new Kvm(other).open(FLOW_BUCKET);
    await eventually(async () => {
      await bucket.put("c.k_restart.f.0", JSON.stringify({ until: Date.now() + MINUTE }));
      return true;
    }, 20_000);
    await eventually(() => board.occupied("c.k_restart.f", 1) === 1, 30_000);
  });
});
