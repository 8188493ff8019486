// `npx tsx bench/nats-durability.ts [rounds]`: what 3 JetStream replicas cost against 1, on this
// machine's nats-server. Acked publishes, one at a time and 256 in flight, to a file stream on a
// single server, on a 3-node loopback cluster with 1 replica, and on the cluster with 3 replicas,
// taking turns each round. Prints medians and ranges; the figures go into RELIABILITY.md by hand.
import { jetstream, jetstreamManager, StorageType } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { freePort } from "../runtime/free-port";
import { startNatsServer, type TestNatsServer } from "../runtime/testing/nats-server";
import { formatNumber, median, rotate, sleep } from "./stats";

const SEQUENTIAL = 2_000;
const PIPELINED = 20_000;
const IN_FLIGHT = 256;
const rounds = Number(process.argv[2] ?? 3);

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

async function sequential(setup: Setup): Promise<number> {
  const js = jetstream(setup.nc);
  const payload = new TextEncoder().encode('{"n":1}');
  const started = performance.now();
  for (let index = 0; index < SEQUENTIAL; index++) await js.publish(setup.subject, payload);
  return SEQUENTIAL / ((performance.now() - started) / 1000);
}

async function pipelined(setup: Setup): Promise<number> {
  const js = jetstream(setup.nc);
  const payload = new TextEncoder().encode('{"n":1}');
  let next = 0;
  const started = performance.now();
  const worker = async (): Promise<void> => {
    while (next < PIPELINED) {
      next++;
      await js.publish(setup.subject, payload);
    }
  };
  await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
  return PIPELINED / ((performance.now() - started) / 1000);
}

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
  const setups: Setup[] = [
    { name: "single server, 1 replica", nc: singleNc, stream: "SINGLE", subject: "SINGLE.x" },
    { name: "3-node cluster, 1 replica", nc: clusterNc, stream: "CLUSTER_R1", subject: "CLUSTER_R1.x" },
    { name: "3-node cluster, 3 replicas", nc: clusterNc, stream: "CLUSTER_R3", subject: "CLUSTER_R3.x" },
  ];
  // Evidence that the R3 stream really keeps three copies: its leader and two current followers.
  const r3 = await (await jetstreamManager(clusterNc)).streams.info("CLUSTER_R3");
  const followers = r3.cluster?.replicas?.filter((replica) => replica.current).length ?? 0;
  process.stderr.write(`CLUSTER_R3: leader ${r3.cluster?.leader}, ${followers} current followers\n`);
  if (followers !== 2) throw new Error(`CLUSTER_R3 has ${followers} current followers, expected 2`);
  const results = new Map(
    setups.map((setup) => [setup.name, { sequential: [] as number[], pipelined: [] as number[] }]),
  );
  for (let round = 0; round < rounds; round++) {
    for (const setup of rotate(setups, round)) {
      const figures = results.get(setup.name) as { sequential: number[]; pipelined: number[] };
      figures.sequential.push(await sequential(setup));
      figures.pipelined.push(await pipelined(setup));
      process.stderr.write(`round ${round + 1}/${rounds}: ${setup.name} done\n`);
    }
  }
  const baseline = results.get(setups[0]?.name as string) as { sequential: number[]; pipelined: number[] };
  const line = (values: number[], base: number[]): string =>
    `${formatNumber(median(values))}/s (${formatNumber(Math.min(...values))}-${formatNumber(Math.max(...values))}), ${(median(values) / median(base)).toFixed(2)}x`;
  process.stdout.write(`| setup | acked publishes, sequential | ${IN_FLIGHT} in flight |\n| --- | --- | --- |\n`);
  for (const [name, figures] of results) {
    process.stdout.write(
      `| ${name} | ${line(figures.sequential, baseline.sequential)} | ${line(figures.pipelined, baseline.pipelined)} |\n`,
    );
  }
} finally {
  await Promise.allSettled(connections.map((nc) => nc.close()));
  await Promise.allSettled([single, ...cluster].map((server) => server.stop()));
}
