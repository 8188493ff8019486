import { jetstreamManager } from "@nats-io/jetstream";
import { afterAll, describe, expect, it } from "vitest";
import { consumerName } from "../../runtime/nats/subjects";
import { eventually } from "../helpers/environment";
import { freePort } from "../helpers/free-port";
import { type PartitionProxy, startPartitionProxy } from "../helpers/partition-proxy";
import { countSucceeded, drainWithStalls, isAlive, useClusterRuntimes } from "./support/cluster-runtimes";
import {
  countApplied,
  enqueueAcknowledged,
  keepCalling,
  report,
  scale,
  waitForSucceeded,
} from "./support/fault-cluster";

// A runtime cut off from the whole 3-node cluster by a network partition while two `jetfn start`
// processes drain audited one-row jobs from R3 streams, and then reconnected. The second runtime
// reaches the nodes only through proxies of the test (the nodes do not advertise their URLs), which
// stop every byte both ways without closing anything, as a silent partition does; Postgres stays
// reachable. Nothing restarts the runtime: it must notice, wait and come back by itself. Calls go on
// throughout: the servers keep the silent runtime's queue subscription while they send to it (a
// nats-server pings a client only when nothing went either way for a ping interval), so its share of
// the calls goes unanswered until the partition heals; the figures say how many.
const JOBS = scale(5_000, 1_000);
/**
 * Jobs enqueued after the partition heals (once both runtimes have a pull waiting), to see the
 * cut-off runtime work again: more than one pull of the other runtime (quick handlers ask for up to
 * 32 jobs per slot, 256 for 8 slots, in one pull request), since the server fills the oldest waiting
 * pull request first. With 200, a CI run saw the other runtime's one pull take them all.
 */
const AFTER_JOBS = scale(1_000, 600);

const proxies: PartitionProxy[] = [];
let metricsPort = 0;
const setup = useClusterRuntimes({
  cluster: { advertise: false },
  runtimeEnv: async (index, cluster) => {
    if (index === 0) return {};
    for (const node of cluster.nodes) proxies.push(await startPartitionProxy(node.port));
    metricsPort = await freePort();
    return { NATS_URL: proxies.map((proxy) => proxy.url).join(","), JETFN_METRICS_PORT: String(metricsPort) };
  },
});

afterAll(async () => {
  await Promise.allSettled(proxies.map((proxy) => proxy.close()));
});

/** One value of the cut-off runtime's metrics (summed over labels), or undefined if not scraped. */
async function metric(name: string, labels = ""): Promise<number | undefined> {
  const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
  const values = text
    .split("\n")
    .filter((line) => line.startsWith(`${name}${labels} `) || (labels === "" && line.startsWith(`${name}{`)))
    .map((line) => Number(line.split(" ").at(-1)));
  return values.length > 0 ? values.reduce((sum, value) => sum + value, 0) : undefined;
}

function occurrences(text: string, needle: string): number {
  return text.split(needle).length - 1;
}

describe("a runtime cut off from the cluster by a partition, then reconnected", () => {
  it(
    `loses none of ${JOBS + AFTER_JOBS} acknowledged jobs, applies each once, and shows the partition`,
    async () => {
      const { database, js, nc, runtimes } = setup();
      const env = { database };
      const [other, cutOff] = runtimes as [NonNullable<(typeof runtimes)[0]>, NonNullable<(typeof runtimes)[0]>];
      const first = await enqueueAcknowledged(js, "fault-insert", JOBS, (n) => ({ n }));
      await waitForSucceeded(env, Math.floor(JOBS / 4), 120_000);
      const calls = keepCalling(nc);
      const ranBefore = (await metric("jetfn_invocations_total")) ?? 0;
      const reconnectsBefore = occurrences(cutOff.output(), "Reconnected to NATS");
      const cutAt = Date.now();
      for (const proxy of proxies) proxy.cut();
      // Meanwhile the other runtime finishes everything, the cut-off one's held jobs included.
      const drain = drainWithStalls(database, JOBS, scale(600_000, 240_000));
      // The cut-off runtime notices by its unanswered pings, and says so in its log and metrics.
      await cutOff.waitFor("NATS answered no pings", 90_000);
      const noticedMs = Date.now() - cutAt;
      const connectedWhileCut = await metric("jetfn_nats_connected");
      const { succeeded, drainedMs, longestStallMs } = await drain;
      const callsWhileCut = await calls.stop();
      const ranAtHeal = (await metric("jetfn_invocations_total")) ?? 0;
      const healAt = Date.now();
      for (const proxy of proxies) proxy.heal();
      await eventually(() => occurrences(cutOff.output(), "Reconnected to NATS") > reconnectsBefore, 90_000);
      const reconnectedMs = Date.now() - healAt;
      // Its pulls failed while cut, so it pulls again after a back-off: wait until both runtimes
      // have a pull waiting, or the other one could take every job before the healed one asks.
      const manager = await jetstreamManager(nc);
      await eventually(
        async () => ((await manager.consumers.info("JETFN_JOBS", consumerName("fault-insert"))).num_waiting ?? 0) >= 2,
        30_000,
      );
      const callsAfter = keepCalling(nc);
      const later = await enqueueAcknowledged(js, "fault-insert", AFTER_JOBS, (n) => ({ n: JOBS + n }));
      const total = await waitForSucceeded(env, JOBS + AFTER_JOBS, scale(300_000, 120_000));
      const ranAfter = (await metric("jetfn_invocations_total")) ?? 0;
      const callsHealed = await callsAfter.stop();
      const counts = await countApplied(env, [...first.ids, ...later.ids]);
      const disconnects = await metric("jetfn_nats_disconnects_total");
      const connected = await metric("jetfn_nats_connected");
      report("cluster-partition", {
        enqueued: JOBS + AFTER_JOBS,
        publishRetries: first.retried + later.retried,
        noticedMs,
        drainedWhileCutMs: drainedMs,
        longestStallWhileCutMs: longestStallMs,
        reconnectedAfterHealMs: reconnectedMs,
        cutOffRanBeforeCut: ranBefore,
        cutOffRanWhileCut: ranAtHeal - ranBefore,
        cutOffRanAfterHeal: ranAfter - ranAtHeal,
        callsWhileCut,
        callsHealed,
        metrics: { connectedWhileCut, connected, disconnects },
        succeededWhileCut: succeeded,
        ...counts,
      });
      expect([isAlive(other), isAlive(cutOff)]).toEqual([true, true]);
      expect(succeeded).toBe(JOBS);
      expect(total).toBe(JOBS + AFTER_JOBS);
      expect(counts).toEqual({
        succeeded: JOBS + AFTER_JOBS,
        rows: JOBS + AFTER_JOBS,
        distinctInvocations: JOBS + AFTER_JOBS,
        duplicated: 0,
        lost: 0,
        auditRows: JOBS + AFTER_JOBS,
        auditMismatches: 0,
      });
      expect(connectedWhileCut).toBe(0);
      expect(connected).toBe(1);
      expect(disconnects).toBeGreaterThanOrEqual(1);
      // Back from the partition, the runtime takes jobs again.
      expect(ranAfter).toBeGreaterThan(ranAtHeal);
      expect(callsHealed.ok).toBeGreaterThan(0);
      expect(await countSucceeded(database)).toBe(JOBS + AFTER_JOBS);
    },
    scale(900_000, 400_000),
  );
});
