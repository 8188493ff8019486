// `npx tsx bench/nats-durability.ts [rounds]`: what 3 JetStream replicas cost against 1, on this
// machine's nats-server. Acked publishes, one at a time and 256 in flight, to a file stream on a
// single server, on a 3-node loopback cluster with 1 replica, and on the cluster with 3 replicas,
// taking turns each round. Prints medians and ranges; the figures go into RELIABILITY.md by hand.
// The bench smoke test runs it with tiny counts so it does not rot.

import { pathToFileURL } from "node:url";
import { jetstream, jetstreamManager, StorageType } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { freePort } from "../runtime/support/free-port";
import { startNatsServer, type TestNatsServer } from "../runtime/testing/nats-server";
import { formatNumber, median, rotate, sleep } from "./stats";

/** Rounds and publish counts of one measurement. */
export interface ReplicaCostSizes {
  rounds: number;
  sequential: number;
  pipelined: number;
  inFlight: number;
}

export const FULL_REPLICA_COST: ReplicaCostSizes = { rounds: 3, sequential: 2_000, pipelined: 20_000, inFlight: 256 };

/** Rates (acked publishes per second) of one setup, one entry per round. */
export interface ReplicaCostRow {
  name: string;
  sequential: number[];
  pipelined: number[];
}

interface Setup {
  name: string;
  nc: NatsConnection;
  stream: string;
  subject: string;
}

/** Three servers routed to each other on loopback, each with JetStream and its own store. */
async function startCluster(): Promise<TestNatsServer[]> {
  const routes = await Promise.all([freePort(), freePort(), freePort()]);
  const urls = routes.map((port) => `nats-route://127.0.0.1:${port}`);
  return Promise.all(
    routes.map((port, index) =>
      startNatsServer({
        config: `server_name: n${index}
cluster {
  name: durability
  listen: 127.0.0.1:${port}
  routes: [${urls.filter((_, other) => other !== index).join(", ")}]
}
`,
      }),
    ),
  );
}

/** Creates `stream` with `replicas`, retrying while the cluster elects its JetStream leader. */
async function createStream(nc: NatsConnection, stream: string, replicas: number): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      const manager = await jetstreamManager(nc);
      await manager.streams.add({
        name: stream,
        subjects: [`${stream}.>`],
        storage: StorageType.File,
        num_replicas: replicas,
      });
      return;
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await sleep(250);
    }
  }
}

async function sequential(setup: Setup, count: number): Promise<number> {
  const js = jetstream(setup.nc);
  const payload = new TextEncoder().encode('{"n":1}');
  const started = performance.now();
  for (let index = 0; index < count; index++) await js.publish(setup.subject, payload);
  return count / ((performance.now() - started) / 1000);
}

async function pipelined(setup: Setup, count: number, inFlight: number): Promise<number> {
  const js = jetstream(setup.nc);
  const payload = new TextEncoder().encode('{"n":1}');
  let next = 0;
  const started = performance.now();
  const worker = async (): Promise<void> => {
    while (next < count) {
      next++;
      await js.publish(setup.subject, payload);
    }
  };
  await Promise.all(Array.from({ length: inFlight }, worker));
  return count / ((performance.now() - started) / 1000);
}

/** The stream's leader and its count of current followers, once `wanted` are current or `withinMs` passed. */
async function currentFollowers(
  nc: NatsConnection,
  stream: string,
  wanted: number,
  withinMs: number,
): Promise<{ leader: string | undefined; followers: number }> {
  const jsm = await jetstreamManager(nc);
  const deadline = Date.now() + withinMs;
  for (;;) {
    const info = await jsm.streams.info(stream);
    const followers = info.cluster?.replicas?.filter((replica) => replica.current).length ?? 0;
    if (followers >= wanted || Date.now() > deadline) return { leader: info.cluster?.leader, followers };
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

/** Measures the three setups, taking turns each round; throws if the R3 stream is not replicated. */
export async function measureReplicaCost(
  sizes: ReplicaCostSizes,
  log: (line: string) => void = () => {},
): Promise<ReplicaCostRow[]> {
  const single = await startNatsServer();
  const cluster = await startCluster();
  const connections: NatsConnection[] = [];
  try {
    const singleNc = await connect({ servers: single.url });
    const clusterNc = await connect({ servers: cluster.map((server) => server.url) });
    connections.push(singleNc, clusterNc);
    await createStream(singleNc, "SINGLE", 1);
    await createStream(clusterNc, "CLUSTER_R1", 1);
    await createStream(clusterNc, "CLUSTER_R3", 3);
    // Evidence that the R3 stream really keeps three copies: its leader and two current followers
    // (a follower of a stream just created may take a moment to report itself current).
    const { leader, followers } = await currentFollowers(clusterNc, "CLUSTER_R3", 2, 15_000);
    log(`CLUSTER_R3: leader ${leader}, ${followers} current followers`);
    if (followers !== 2) throw new Error(`CLUSTER_R3 has ${followers} current followers, expected 2`);
    const setups: Setup[] = [
      { name: "single server, 1 replica", nc: singleNc, stream: "SINGLE", subject: "SINGLE.x" },
      { name: "3-node cluster, 1 replica", nc: clusterNc, stream: "CLUSTER_R1", subject: "CLUSTER_R1.x" },
      { name: "3-node cluster, 3 replicas", nc: clusterNc, stream: "CLUSTER_R3", subject: "CLUSTER_R3.x" },
    ];
    const rows = setups.map((setup): ReplicaCostRow => ({ name: setup.name, sequential: [], pipelined: [] }));
    for (let round = 0; round < sizes.rounds; round++) {
      for (const setup of rotate(setups, round)) {
        const row = rows.find((candidate) => candidate.name === setup.name) as ReplicaCostRow;
        row.sequential.push(await sequential(setup, sizes.sequential));
        row.pipelined.push(await pipelined(setup, sizes.pipelined, sizes.inFlight));
        log(`round ${round + 1}/${sizes.rounds}: ${setup.name} done`);
      }
    }
    return rows;
  } finally {
    await Promise.allSettled(connections.map((nc) => nc.close()));
    await Promise.allSettled([single, ...cluster].map((server) => server.stop()));
  }
}

/** The rows as a markdown table, each rate with its ratio to the first row's. */
export function replicaCostTable(rows: ReplicaCostRow[], inFlight: number): string {
  const [baseline] = rows;
  const cell = (values: number[], base: number[]): string =>
    `${formatNumber(median(values))}/s (${formatNumber(Math.min(...values))}-${formatNumber(Math.max(...values))}), ${(median(values) / median(base)).toFixed(2)}x`;
  const lines = [`| setup | acked publishes, sequential | ${inFlight} in flight |`, "| --- | --- | --- |"];
  for (const row of rows) {
    lines.push(
      `| ${row.name} | ${cell(row.sequential, baseline?.sequential ?? [])} | ${cell(row.pipelined, baseline?.pipelined ?? [])} |`,
    );
  }
  return `${lines.join("\n")}\n`;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  const sizes = { ...FULL_REPLICA_COST, rounds: Number(process.argv[2] ?? FULL_REPLICA_COST.rounds) };
  const rows = await measureReplicaCost(sizes, (line) => process.stderr.write(`${line}\n`));
  process.stdout.write(replicaCostTable(rows, sizes.inFlight));
}
