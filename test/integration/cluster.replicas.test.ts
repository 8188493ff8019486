import { fileURLToPath } from "node:url";
import { jetstreamManager, type StreamInfo } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { JOB_KEYS_BUCKET } from "../../runtime/flow/job-keys";
import { FLOW_BUCKET } from "../../runtime/flow/slot-board";
import { WAITING_BUCKET } from "../../runtime/flow/waiting-jobs";
import { waitingStreamName } from "../../runtime/flow/waiting-room";
import { CANCEL_BUCKET } from "../../runtime/invocation/cancellation";
import { AUDIT_ANCHOR_STREAM } from "../../runtime/nats/audit-anchor-stream";
import { DEFINITIONS_BUCKET } from "../../runtime/nats/consumer-definitions";
import { delayedStreamName, farStreamName } from "../../runtime/nats/delayed-jobs";
import { EVENT_STREAM } from "../../runtime/nats/event-stream";
import { consumerName, PROGRESS_BUCKET } from "../../runtime/nats/subjects";
import { DEFAULT_PLACEMENT_WAIT_MS } from "../../runtime/nats/until-answered";
import { type Runtime, type StartRuntimeOptions, startRuntime } from "../../runtime/runtime";
import { createClient } from "../../runtime/sdk/client";
import { SCHEDULE_BUCKET } from "../../runtime/triggers/scheduler";
import { createTestDatabase, type TestDatabase } from "../helpers/database";
import { eventually } from "../helpers/environment";
import { type CapturedLogger, captureLogs } from "../helpers/logs";
import { startNatsCluster, type TestNatsCluster } from "../helpers/nats-cluster";
import { startNatsServer } from "../helpers/nats-server";
import { stopWhenTestEnds } from "../helpers/test-scope";

/** Only the functions this file uses: each deploy on the cluster creates R3 consumers. */
const REPLICA_FUNCTIONS = fileURLToPath(new URL("../fixtures/replica-functions", import.meta.url));

// JETFN_REPLICAS on a 3-node cluster started from deploy/nats-cluster: every stream and bucket
// jetfn creates gets the replicas, and raising the setting scales existing ones up in place.

/** Every stream jetfn creates, buckets as their streams. */
const STREAMS = [
  "JETFN_JOBS",
  delayedStreamName("JETFN_JOBS"),
  farStreamName(delayedStreamName("JETFN_JOBS")),
  EVENT_STREAM,
  `KV_${PROGRESS_BUCKET}`,
  `KV_${CANCEL_BUCKET}`,
  `KV_${DEFINITIONS_BUCKET}`,
  `KV_${JOB_KEYS_BUCKET}`,
  `KV_${SCHEDULE_BUCKET}`,
  AUDIT_ANCHOR_STREAM,
  // Made when the first function with a concurrency or rate limit deploys (globally-limited).
  waitingStreamName("JETFN_JOBS"),
  `KV_${FLOW_BUCKET}`,
  `KV_${WAITING_BUCKET}`,
];

let database: TestDatabase;

beforeAll(async () => {
  database = await createTestDatabase();
  await database.sql`create table items (id serial primary key, name text not null, attempt int, invocation text)`;
});

afterAll(async () => {
  await database?.drop();
});

async function startOn(natsUrl: string, options: StartRuntimeOptions = {}) {
  const logs = captureLogs();
  const runtime = await startRuntime({
    natsUrl,
    databaseUrl: database.url,
    functionsDir: REPLICA_FUNCTIONS,
    logger: logs.logger,
    shutdownGrace: "5s",
    databasePoolSize: 4,
    ...options,
  });
  stopWhenTestEnds(() => runtime.stop());
  return Object.assign(runtime, { logs });
}

/** The warning a runtime logs each time a cluster refuses the replicas it asks for, before asking again. */
const REFUSED = "The NATS cluster refused the replicas JETFN_REPLICAS asks for";

/** The first refusal `logs` show while `starting` runs; the start's failure if it ends first. */
async function firstRefusal(logs: CapturedLogger, starting: Promise<Runtime>): Promise<Record<string, unknown>> {
  let ended: { error?: unknown } | undefined;
  starting.then(
    () => {
      ended = {};
    },
    (error: unknown) => {
      ended = { error };
    },
  );
  for (;;) {
    const refusal = logs.matching(REFUSED)[0];
    if (refusal) return refusal;
    if (ended) throw ended.error ?? new Error("the runtime started without the cluster refusing its replicas");
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

async function connectTo(cluster: TestNatsCluster): Promise<NatsConnection> {
  const nc = await connect({ servers: cluster.nodes.map((node) => node.url) });
  stopWhenTestEnds(() => nc.close());
  return nc;
}

/** Each stream's info once all its replicas are current (followers catch up after a scale-up). */
async function replicatedInfos(nc: NatsConnection, replicas: number): Promise<Map<string, StreamInfo>> {
  const manager = await jetstreamManager(nc);
  return eventually(async () => {
    const infos = new Map<string, StreamInfo>();
    for (const stream of STREAMS) {
      const info = await manager.streams.info(stream);
      const current = info.cluster?.replicas?.filter((replica) => replica.current).length ?? 0;
      if (info.config.num_replicas !== replicas || current !== replicas - 1 || !info.cluster?.leader) return undefined;
      infos.set(stream, info);
    }
    return infos;
  }, 30_000);
}

/** Runs a job and a call through the runtime: the R3 streams take and deliver work. */
async function expectWorkRuns(natsUrl: string, name: string): Promise<void> {
  const client = await createClient({ natsUrl });
  stopWhenTestEnds(() => client.close());
  await expect(client.call("add", { a: 2, b: 40 })).resolves.toEqual({ sum: 42 });
  const job = await client.enqueue("insert-item", { name });
  await eventually(async () => {
    const rows = await database.sql`select invocation from items where name = ${name}`;
    return rows.length === 1 && rows[0]?.invocation === job.id;
  }, 30_000);
}

describe("JETFN_REPLICAS on a 3-node cluster", () => {
  it("creates every stream, bucket and consumer with 3 replicas, and calls and jobs work", {
    timeout: 120_000,
  }, async () => {
    const cluster = await startNatsCluster();
    const runtime = await startOn(cluster.url, { replicas: 3, placementTags: ["region:local"] });
    const nc = await connectTo(cluster);
    const infos = await replicatedInfos(nc, 3);
    for (const info of infos.values()) expect(info.config.placement?.tags).toEqual(["region:local"]);
    const consumer = await (await jetstreamManager(nc)).consumers.info("JETFN_JOBS", consumerName("insert-item"));
    expect(consumer.cluster?.replicas).toHaveLength(2);
    await expectWorkRuns(cluster.url, "r3-job");
    // At 3 replicas the start-up check has nothing to say about them.
    expect(runtime.logs.matching("Production check:").filter((line) => line.check === "replicas")).toEqual([]);
  });

  it("scales existing streams and buckets from 1 to 3 replicas on restart, keeping their messages", {
    timeout: 180_000,
  }, async () => {
    const cluster = await startNatsCluster();
    const first = await startOn(cluster.url);
    await expectWorkRuns(cluster.url, "before-scaling");
    const nc = await connectTo(cluster);
    const before = await replicatedInfos(nc, 1);
    const warning = await eventually(() =>
      first.logs.matching("Production check:").find((line) => line.check === "replicas"),
    );
    expect(String(warning.msg)).toContain("JETFN_REPLICAS=3");
    await first.stop();

    const second = await startOn(cluster.url, { replicas: 3 });
    const after = await replicatedInfos(nc, 3);
    // Kept: none gone. The audit sealer may anchor again meanwhile, adding a message.
    for (const stream of STREAMS) {
      expect(after.get(stream)?.state.messages, stream).toBeGreaterThanOrEqual(before.get(stream)?.state.messages ?? 0);
    }
    expect(second.logs.matching("Scaled stream up").map((line) => line.stream)).toEqual(STREAMS);
    // The function's consumer follows its stream (its replicas are inherited).
    await eventually(async () => {
      const info = await (await jetstreamManager(nc)).consumers.info("JETFN_JOBS", consumerName("insert-item"));
      return info.cluster?.replicas?.length === 2;
    }, 30_000);
    await expectWorkRuns(cluster.url, "after-scaling");
    await second.stop();

    // Started again with the default of 1, the runtime keeps the 3 replicas and says so.
    const third = await startOn(cluster.url);
    await replicatedInfos(nc, 3);
    expect(third.logs.matching("jetfn never lowers them").length).toBe(STREAMS.length);
  });

  it("starts once a cluster still forming can place 3 replicas, after asking again while it refused them", {
    timeout: 180_000,
  }, async () => {
    // Servers and runtimes started together: one node up, the runtime starting, then the others.
    const cluster = await startNatsCluster({ startedNodes: ["n1"] });
    const logs = captureLogs();
    const starting = startRuntime({
      natsUrl: cluster.url,
      databaseUrl: database.url,
      functionsDir: REPLICA_FUNCTIONS,
      logger: logs.logger,
      shutdownGrace: "5s",
      databasePoolSize: 4,
      replicas: 3,
    });
    stopWhenTestEnds(() => starting.then((runtime) => runtime.stop()).catch(() => undefined));
    // Two of three elect a meta leader, which refuses a stream of 3 replicas until the third joins.
    await cluster.start("n2");
    const refusal = await firstRefusal(logs, starting);
    expect(refusal).toMatchObject({
      level: 40,
      setting: "JETFN_REPLICAS",
      replicas: 3,
      serverSaid: expect.stringMatching(/peers|resources/),
      waitsUpToMs: DEFAULT_PLACEMENT_WAIT_MS,
    });
    await cluster.start("n3");
    await starting;
    const nc = await connectTo(cluster);
    await replicatedInfos(nc, 3);
    await expectWorkRuns(cluster.url, "formed-cluster-job");
  });

  it("refuses JETFN_REPLICAS=3 on a single server with E_CONFIG_INVALID naming the setting, without waiting", async () => {
    const server = await startNatsServer();
    const started = Date.now();
    await expect(startOn(server.url, { replicas: 3 })).rejects.toMatchObject({
      code: "E_CONFIG_INVALID",
      message: expect.stringContaining("JETFN_REPLICAS=3 needs a NATS cluster"),
    });
    // A server outside any cluster says so ("not supported in non-clustered mode"): no wait for a
    // cluster to form. Half the wait a cluster gets leaves a loaded machine plenty for the rest.
    expect(Date.now() - started).toBeLessThan(DEFAULT_PLACEMENT_WAIT_MS / 2);
  });
});
