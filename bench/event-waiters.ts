// What the shared matcher of durable waits (runtime/triggers/event-waiters.ts) costs each event
// stored when no job waits: a runtime with no function runs while this process publishes events
// to JETFN_EVENTS; the round ends once the `jetfn-waiters` consumer has nothing pending or unacked
// (at once on a version without it). Run it on two commits side by side (git worktrees) and compare.
//
//   node --import tsx bench/event-waiters.ts [events=20000] [rounds=3]
//
// Prints one JSON line per round: events per second from the first publish to the drain, and CPU
// per event of this process (publisher and runtime), of the test database's Postgres backends and
// of nats-server.
import { type JetStreamManager, jetstream, jetstreamManager } from "@nats-io/jetstream";
import { readCpu } from "./cpu-use";
import { createFunctionsFolder, startBenchRuntime } from "./jetfn-host";
import { startServices } from "./services";
import { sleep } from "./stats";

const EVENTS = Number(process.argv[2] ?? 20_000);
const ROUNDS = Number(process.argv[3] ?? 3);
const WINDOW = 500;

const services = await startServices((message) => process.stderr.write(`${message}\n`));
try {
  for (let round = 1; round <= ROUNDS; round++) {
    const database = await services.jetfnDatabase("events");
    const folder = await createFunctionsFolder();
    const runtime = await startBenchRuntime({
      natsUrl: services.natsUrl,
      databaseUrl: database.url,
      functionsDir: folder.dir,
    });
    const nc = await services.connectNats("event-publisher");
    const js = jetstream(nc);
    const manager = await jetstreamManager(nc);
    const scope = { database: database.name, natsPids: services.natsPid ? [services.natsPid] : [] };
    await drained(manager);
    const before = await readCpu(scope);
    const started = performance.now();
    for (let sent = 0; sent < EVENTS; sent += WINDOW) {
      const count = Math.min(WINDOW, EVENTS - sent);
      await Promise.all(
        Array.from({ length: count }, (_, k) =>
          js.publish("fn.event.bench.happened", JSON.stringify({ n: sent + k, orderId: `o-${sent + k}` })),
        ),
      );
    }
    const published = performance.now();
    await drained(manager);
    const ended = performance.now();
    const after = await readCpu(scope);
    const perEvent = (ms: number) => Math.round((ms * 1000 * 10) / EVENTS) / 10;
    process.stdout.write(
      `${JSON.stringify({
        round,
        events: EVENTS,
        eventsPerSecond: Math.round(EVENTS / ((ended - started) / 1000)),
        drainLagMs: Math.round(ended - published),
        nodeMicrosPerEvent: before && after ? perEvent(after.node - before.node) : undefined,
        postgresMicrosPerEvent:
          before && after ? perEvent(after.servers.postgres - before.servers.postgres) : undefined,
        natsMicrosPerEvent:
          before && after ? perEvent(after.servers["nats-server"] - before.servers["nats-server"]) : undefined,
      })}\n`,
    );
    await runtime.stop();
    await nc.close();
    await manager.streams.delete("JETFN_EVENTS").catch(() => undefined);
    await folder.remove();
    await database.drop();
  }
} finally {
  await services.close();
}

/** Resolves once the shared matcher's consumer has nothing left to match (at once where there is none). */
async function drained(manager: JetStreamManager): Promise<void> {
  for (;;) {
    const info = await manager.consumers.info("JETFN_EVENTS", "jetfn-waiters").catch(() => undefined);
    if (!info || (info.num_pending === 0 && info.num_ack_pending === 0)) return;
    await sleep(20);
  }
}
