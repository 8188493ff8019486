// What matching events with durable waits (runtime/triggers/event-waiters.ts) costs each event
// stored: a runtime with no function runs while this process publishes events of one name to
// JETFN_EVENTS; the round ends once the waits' consumers have nothing pending or unacked (at once
// where there is none). `waits` says what waits meanwhile: `none`, `other` (a step waiting for an
// event of another name), `same` (a step waiting for one of the published name, which none of them
// matches, so every event is read and matched) or `many` (10,000 steps waiting for the published
// name, each for another value, none matched: the index lookup at scale). Run it on two commits side by side (git worktrees).
//
//   node --import tsx bench/event-waiters.ts [events=20000] [rounds=3] [waits=none|other|same|many]
//
// Prints one JSON line per round: events per second from the first publish to the drain, and CPU
// per event of this process (publisher and runtime), of the test database's Postgres backends and
// of nats-server.
import { type JetStreamManager, jetstream, jetstreamManager } from "@nats-io/jetstream";
import type { Sql } from "postgres";
import { readCpu } from "./cpu-use";
import { createFunctionsFolder, startBenchRuntime } from "./jetfn-host";
import { startServices } from "./services";
import { sleep } from "./stats";

const EVENTS = Number(process.argv[2] ?? 20_000);
const ROUNDS = Number(process.argv[3] ?? 3);
const WAITS = process.argv[4] ?? "none";
const WINDOW = 500;
const EVENT = "bench.happened";
/** The consumers of the waits, of this version (per waited name) and of the version before (shared). */
const WAIT_CONSUMERS = ["jetfn-waiters", "jetfn-wait-bench:happened", "jetfn-wait-bench:other"];
const MANY = 10_000;
if (!["none", "other", "same", "many"].includes(WAITS)) {
  throw new Error(`waits must be none, other, same or many, got ${WAITS}`);
}

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
    if (WAITS !== "none")
      await recordWaits(database.sql, WAITS === "other" ? "bench.other" : EVENT, WAITS === "many" ? MANY : 1);
    const scope = { database: database.name, natsPids: services.natsPid ? [services.natsPid] : [] };
    await drained(manager);
    const before = await readCpu(scope);
    const started = performance.now();
    for (let sent = 0; sent < EVENTS; sent += WINDOW) {
      const count = Math.min(WINDOW, EVENTS - sent);
      await Promise.all(
        Array.from({ length: count }, (_, k) =>
          js.publish(`fn.event.${EVENT}`, JSON.stringify({ n: sent + k, orderId: `o-${sent + k}` })),
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
        waits: WAITS,
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

/** Records `count` steps of jobs waiting for an event named `event` that no published event matches. */
async function recordWaits(sql: Sql, event: string, count: number): Promise<void> {
  await sql`select jetfn.await_event('bench-wait-' || g, 'bench.waits', 1, '{}'::jsonb, now(), now(), 1, null, null,
    null, null, 'wait', ${event}, '{orderId}'::text[], jsonb_build_array('nobody-' || g), now() + interval '1 hour',
    '1t', null::text)
    from generate_series(1, ${count}::integer) g`;
  // Caught up already: the runtimes' sweep has nothing to read for them.
  await sql`update jetfn.steps set caught_up_at = now() where status = 'waiting'`;
}

/** Resolves once the waits' consumers have nothing left to match, and one is read if a step waits. */
async function drained(manager: JetStreamManager): Promise<void> {
  for (;;) {
    const infos = await Promise.all(
      WAIT_CONSUMERS.map((name) => manager.consumers.info("JETFN_EVENTS", name).catch(() => undefined)),
    );
    const read = infos.filter((info) => info !== undefined);
    const idle = read.every((info) => info.num_pending === 0 && info.num_ack_pending === 0);
    if (idle && (WAITS === "none" || read.some((info) => info.num_waiting > 0))) return;
    await sleep(20);
  }
}
