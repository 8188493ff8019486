import { connect, type NatsConnection } from "@nats-io/transport-node";
import { describe, expect, it } from "vitest";
import { eventually } from "../helpers/environment";
import { useClusterRuntimes } from "./support/cluster-runtimes";
import { type CallCounts, keepCalling, report, scale } from "./support/fault-cluster";

// Request-reply calls to `add` while a node of the 3-node cluster is killed (SIGKILL) and later
// started again. The node is the one the caller and both runtimes are connected to: the runtimes are
// given only its URL and must find the other two from the cluster's gossip; the caller lists every
// node. Nobody restarts anything: the caller and the runtimes reconnect by themselves.
const CALLING_MS = scale(60_000, 15_000);
/** Longest the calls may go unanswered across the loss (measured well under it; room for a loaded machine). */
const GAP_BOUND_MS = 20_000;

const setup = useClusterRuntimes({
  // The runtimes know only n1, the node that will be killed.
  runtimeEnv: (_, cluster) => ({ NATS_URL: cluster.nodes[0]?.url }),
});

/** The caller: connected to n1 first, with every node's URL to reconnect to, as createClient does. */
async function connectCaller(): Promise<NatsConnection> {
  const { cluster } = setup();
  return connect({
    servers: cluster.nodes.map((node) => node.url),
    noRandomize: true,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 500,
  });
}

describe("calls while a cluster node is lost", () => {
  it("callers and runtimes reconnect to the other nodes by themselves", async () => {
    const { cluster, runtimes } = setup();
    const caller = await connectCaller();
    try {
      const lost = cluster.nodes[0]?.name as string;
      expect(caller.info?.server_name).toBe(lost);
      const warmup = keepCalling(caller);
      await new Promise((resolve) => setTimeout(resolve, 2_000));
      const before = await warmup.stop();
      const calls = keepCalling(caller);
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      const killedAt = Date.now();
      await cluster.kill(lost, "SIGKILL");
      // The caller and the runtimes were on the lost node; all must come back on another.
      const callerBack = await eventually(() => caller.info?.server_name !== lost && !caller.isClosed(), 60_000);
      const reconnected = await eventually(
        () => runtimes.every((runtime) => runtime.output().includes("Reconnected to NATS")) || undefined,
        60_000,
      ).catch(() => false);
      await new Promise((resolve) => setTimeout(resolve, CALLING_MS / 2));
      await cluster.start(lost);
      await new Promise((resolve) => setTimeout(resolve, CALLING_MS / 2));
      const during: CallCounts = await calls.stop();
      const after = keepCalling(caller);
      await new Promise((resolve) => setTimeout(resolve, 2_000));
      const settled = await after.stop();
      report("cluster-calls-node-loss", {
        lostNode: lost,
        callerNowOn: caller.info?.server_name,
        runtimesReconnected: runtimes.map((runtime) => runtime.output().includes("Reconnected to NATS")),
        callsBefore: before,
        callsAcrossLoss: during,
        callsAfter: settled,
        killedAt: new Date(killedAt).toISOString(),
      });
      expect(callerBack).toBe(true);
      expect(reconnected).toBe(true);
      expect(runtimes.every((runtime) => runtime.child.exitCode === null)).toBe(true);
      expect(before.failed).toBe(0);
      expect(during.ok).toBeGreaterThan(0);
      expect(during.longestGapMs).toBeLessThan(GAP_BOUND_MS);
      // Once reconnected, every call is answered again.
      expect(settled).toMatchObject({ failed: 0 });
      expect(settled.ok).toBeGreaterThan(0);
    } finally {
      await caller.close();
    }
  }, 240_000);
});
