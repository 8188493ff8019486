import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { expect, it } from "vitest";
import { ensureWaitingRoom } from "../../runtime/flow/waiting-room";
import { ensureAuditAnchorStream } from "../../runtime/nats/audit-anchor-stream";
import { ensureBucket } from "../../runtime/nats/buckets";
import { ensureDelayedJobs } from "../../runtime/nats/delayed-jobs";
import { SINGLE_REPLICA } from "../../runtime/nats/stream-replicas";
import { startNatsServer } from "../helpers/nats-server";

// Runtimes that start, or deploy a function with limits, at the same moment race to create the same
// streams and buckets. In one CI run the loser's create of the schedules bucket was refused
// ("subjects overlap with an existing stream") and its start failed, twice (a runtime exiting at
// start, and a test's two runtimes). This test did not reproduce that race on the code before (it
// is rare); it checks that many creates at once all succeed and make each stream once.
it("lets runtimes create jetfn's streams at the same moment, each finding them made", async () => {
  const server = await startNatsServer();
  const connections = await Promise.all(Array.from({ length: 6 }, () => connect({ servers: server.url })));
  try {
    const managers = await Promise.all(connections.map((nc) => jetstreamManager(nc)));
    for (const ensure of [
      (manager: (typeof managers)[number]) => ensureWaitingRoom(manager, "JETFN_JOBS", SINGLE_REPLICA),
      (manager: (typeof managers)[number]) => ensureDelayedJobs(manager, "JETFN_JOBS", SINGLE_REPLICA),
      (manager: (typeof managers)[number]) => ensureAuditAnchorStream(manager, SINGLE_REPLICA),
    ]) {
      const outcomes = await Promise.allSettled(managers.map((manager) => ensure(manager)));
      expect(outcomes.filter((outcome) => outcome.status === "rejected")).toEqual([]);
    }
    const buckets = await Promise.allSettled(connections.map((nc) => ensureBucket(nc, "JETFN_RACE", { ttl: 60_000 })));
    expect(buckets.filter((outcome) => outcome.status === "rejected")).toEqual([]);
    const names: string[] = [];
    for await (const name of managers[0]?.streams.names() ?? []) names.push(name);
    expect(names.sort()).toEqual([
      "JETFN_AUDIT_ANCHORS",
      "JETFN_JOBS_DELAYED",
      "JETFN_JOBS_DELAYED_FAR",
      "JETFN_JOBS_WAITING",
      "KV_JETFN_RACE",
    ]);
  } finally {
    await Promise.all(connections.map((nc) => nc.close()));
    await server.stop();
  }
});
