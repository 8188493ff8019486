import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { describe, expect, it } from "vitest";
import { FETCH_EXPIRES_MS, IDLE_PULL_HEARTBEAT_MS } from "../../runtime/nats/job-puller";
import { startRuntime } from "../../runtime/runtime";
import { createClient } from "../../runtime/sdk/client";
import { createTestDatabase } from "../helpers/database";
import { CLUSTER_FUNCTIONS, eventually } from "../helpers/environment";
import { captureLogs } from "../helpers/logs";
import { startNatsCluster } from "../helpers/nats-cluster";
import { stopWhenTestEnds } from "../helpers/test-scope";
import { report } from "./support/fault-cluster";

// An idle function's pull request carries a heartbeat every 15 s, not every second: one a second for
// each of 500 idle functions cost most of a runtime's idle CPU. Its consumer's leader node killed,
// the function's next job must still start once the new leader is elected, not when two missed
// heartbeats would end the pull (30 s). nats-server keeps the waiting request on the new leader.

const CONSUMER = "add";
/** Longest from the new leader's election to the job's success: well under two missed heartbeats. */
const RUN_BOUND_MS = 2 * IDLE_PULL_HEARTBEAT_MS - 10_000;

describe("the node leading an idle function's consumer killed on a 3-node cluster", () => {
  it("runs the function's next job once a new leader is elected", async () => {
    const [cluster, database] = await Promise.all([startNatsCluster(), createTestDatabase()]);
    stopWhenTestEnds(() => database.drop());
    const nc = await connect({ servers: cluster.nodes.map((node) => node.url), maxReconnectAttempts: -1 });
    stopWhenTestEnds(() => nc.close());
    const manager = await jetstreamManager(nc);
    // Connected to n1 only, so killing another node leaves its connection alone (a reconnect makes
    // every puller pull again); no stall watch within the test.
    const runtime = await startRuntime({
      natsUrl: cluster.nodes[0]?.url,
      databaseUrl: database.url,
      functionsDir: CLUSTER_FUNCTIONS,
      replicas: 3,
      logger: captureLogs().logger,
      shutdownGrace: "3s",
      databasePoolSize: 4,
      healthCheckInterval: "1h",
    });
    stopWhenTestEnds(() => runtime.stop());
    const connectedTo = runtime.nats.info?.server_name;
    // The consumer led from another node than the runtime's, with the runtime's pull waiting there.
    const leader = await eventually(async () => {
      const info = await manager.consumers.info("JETFN_JOBS", CONSUMER);
      if (info.cluster?.leader === connectedTo) {
        await nc.request(`$JS.API.CONSUMER.LEADER.STEPDOWN.JETFN_JOBS.${CONSUMER}`, "", { timeout: 5_000 });
        return undefined;
      }
      return info.cluster?.leader && info.num_waiting > 0 ? info.cluster.leader : undefined;
    }, 60_000);
    const killedAt = Date.now();
    await cluster.kill(leader, "SIGKILL");
    const newLeader = await eventually(async () => {
      const info = await manager.consumers.info("JETFN_JOBS", CONSUMER).catch(() => undefined);
      return info?.cluster?.leader && info.cluster.leader !== leader ? info.cluster.leader : undefined;
    }, 60_000);
    const electedAt = Date.now();
    // The killed node may have led the stream too: a publish before its new leader is elected finds
    // no responders (E_UNAVAILABLE, which a client retries). The job is enqueued once one leads.
    await eventually(async () => {
      const info = await manager.streams.info("JETFN_JOBS").catch(() => undefined);
      return info?.cluster?.leader !== undefined && info.cluster.leader !== leader;
    }, 60_000);
    const client = await createClient({ natsUrl: cluster.url });
    stopWhenTestEnds(() => client.close());
    const { id } = await client.enqueue(CONSUMER, { a: 2, b: 3 });
    await eventually(async () => (await client.status(id)).status === "succeeded", FETCH_EXPIRES_MS * 2);
    const ranAfterElectionMs = Date.now() - electedAt;
    report("cluster-idle-failover", { killed: leader, newLeader, electedMs: electedAt - killedAt, ranAfterElectionMs });
    expect(runtime.nats.info?.server_name).toBe(connectedTo);
    expect(ranAfterElectionMs).toBeLessThan(RUN_BOUND_MS);
  }, 180_000);
});
