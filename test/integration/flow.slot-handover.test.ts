import { setTimeout as sleep } from "node:timers/promises";
import { Kvm } from "@nats-io/kv";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LEASE_MS } from "../../runtime/flow/flow-control";
import { FLOW_BUCKET } from "../../runtime/flow/slot-board";
import type { JetfnClient } from "../../runtime/sdk/client";
import { createTestEnvironment, eventually, type TestEnvironment } from "../helpers/environment";
import { type FlowRun, finishedRuns, maxOverlap } from "../helpers/flow-runs";

/**
 * A saturated limit: jobs keep arriving while both slots of a key are busy. A freed lease is kept
 * for the job it wakes, so each job waits once, in line, and jobs start in about the order they
 * came. The keeping is in JETFN_FLOW: it outlives the runtime that wrote it, and runs out.
 */

const JOBS = 200;
/** Arrivals every 10 ms, while two slots of 40 ms jobs start at most 50 a second: the line grows. */
const ARRIVAL_EVERY_MS = 10;
/** Jobs enqueued at once, 100 at a time, in the second test. */
const BURST = 500;

let env: TestEnvironment;
let client: JetfnClient;

beforeAll(async () => {
  env = await createTestEnvironment();
  client = await env.client();
});

afterAll(async () => {
  await env?.close();
});

/** Counts, per job id, its parks (publishes to the waiting stream) and wakes (publishes back with Jetfn-Woken). */
function countParks(nc: JetfnClient["connection"]): { parks: Map<string, number>; wakes: () => number; stop(): void } {
  const parks = new Map<string, number>();
  let wakes = 0;
  const parked = nc.subscribe("jetfn.waiting.>", {
    callback: (_error, message) => {
      const id = message.headers?.get("Jetfn-Id") ?? "";
      parks.set(id, (parks.get(id) ?? 0) + 1);
    },
  });
  const woken = nc.subscribe("fn.job.tenant-limited", {
    callback: (_error, message) => {
      if (message.headers?.get("Jetfn-Woken")) wakes++;
    },
  });
  return {
    parks,
    wakes: () => wakes,
    stop() {
      parked.unsubscribe();
      woken.unsubscribe();
    },
  };
}

/** The runs of these jobs, once every one has ended. */
async function finishedOf(jobs: Map<string, number>): Promise<FlowRun[]> {
  const ended = async () => (await finishedRuns(env, "tenant-limited", 0)).filter((run) => jobs.has(run.id));
  await eventually(async () => (await ended()).length === jobs.size, 120_000);
  return ended();
}

/** Parks per job, and how far jobs moved from their arrival order when they started. */
function summarise(runs: FlowRun[], arrival: Map<string, number>, parks: Map<string, number>) {
  const counts = [...arrival.keys()].map((id) => parks.get(id) ?? 0);
  const started = [...runs].sort((a, b) => (a.result?.start ?? 0) - (b.result?.start ?? 0));
  const moves = started
    .map((run, position) => Math.abs(position - (arrival.get(run.id) ?? position)))
    .sort((a, b) => a - b);
  const ends = runs.map((run) => run.result?.end ?? 0);
  const lastEnd = Math.max(...ends);
  const firstStart = Math.min(...runs.map((run) => run.result?.start ?? lastEnd));
  const busy = runs.reduce((sum, run) => sum + ((run.result?.end ?? 0) - (run.result?.start ?? 0)), 0);
  return {
    totalParks: counts.reduce((sum, count) => sum + count, 0),
    parkedAgain: counts.filter((count) => count > 1).length,
    mostParks: Math.max(...counts),
    medianMove: moves[Math.floor(moves.length / 2)] ?? 0,
    mostMove: moves.at(-1) ?? 0,
    lastEnd,
    // Both slots are wanted all along: the share of their time spent running handlers.
    slotsBusy: Math.round((100 * busy) / (2 * (lastEnd - firstStart))),
  };
}

describe("a saturated concurrency limit", () => {
  it(`hands each freed slot to the job it wakes: ${JOBS} jobs arriving steadily each wait once, and start in about their order`, async () => {
    await Promise.all([env.startRuntime(), env.startRuntime()]);
    const counter = countParks(client.connection);
    await client.connection.flush();
    const arrival = new Map<string, number>();
    const firstEnqueue = Date.now();
    for (let n = 0; n < JOBS; n++) {
      const job = await client.enqueue("tenant-limited", { tenant: "steady", ms: 40, n } as never);
      arrival.set(job.id, n);
      await sleep(ARRIVAL_EVERY_MS);
    }
    const runs = await finishedOf(arrival);
    counter.stop();

    expect(runs.map((run) => run.status)).toEqual(Array(JOBS).fill("succeeded"));
    expect(maxOverlap(runs)).toBeLessThanOrEqual(2);
    const { totalParks, parkedAgain, mostParks, medianMove, mostMove, lastEnd, slotsBusy } = summarise(
      runs,
      arrival,
      counter.parks,
    );
    console.info(
      `saturated limit: ${JOBS} jobs, ${totalParks} parks (${parkedAgain} jobs parked more than once, most ${mostParks}), ${counter.wakes()} wakes; start position moved median ${medianMove}, most ${mostMove}; all done ${lastEnd - firstEnqueue} ms after the first enqueue, slots busy ${slotsBusy}%`,
    );
    expect(mostParks).toBeLessThanOrEqual(2);
    expect(parkedAgain).toBeLessThanOrEqual(JOBS / 20);
    expect(mostMove).toBeLessThanOrEqual(20);
  });

  it(`parks each of ${BURST} jobs enqueued at once about once, though woken jobs come back behind the unparked rest`, async () => {
    await Promise.all([env.startRuntime(), env.startRuntime()]);
    const counter = countParks(client.connection);
    await client.connection.flush();
    const arrival = new Map<string, number>();
    const firstEnqueue = Date.now();
    for (let at = 0; at < BURST; at += 100) {
      const jobs = await Promise.all(
        Array.from({ length: 100 }, (_, index) =>
          client.enqueue("tenant-limited", { tenant: "burst", ms: 5, n: at + index } as never),
        ),
      );
      for (const [index, job] of jobs.entries()) arrival.set(job.id, at + index);
    }
    const runs = await finishedOf(arrival);
    counter.stop();
    expect(runs.map((run) => run.status)).toEqual(Array(BURST).fill("succeeded"));
    expect(maxOverlap(runs)).toBeLessThanOrEqual(2);
    const { totalParks, parkedAgain, mostParks, lastEnd } = summarise(runs, arrival, counter.parks);
    console.info(
      `burst on a limit: ${BURST} jobs, ${totalParks} parks (${parkedAgain} jobs parked more than once, most ${mostParks}), ${counter.wakes()} wakes; all done ${lastEnd - firstEnqueue} ms after the first enqueue`,
    );
    expect(totalParks).toBeLessThanOrEqual(BURST * 1.1);
  });

  it("gives the lease kept for a woken job that was cancelled while it waited to the next job in line", async () => {
    await env.startRuntime();
    // Both leases of tenant "cx": one for a few seconds, one for long.
    const [short, long] = await Promise.all([
      client.enqueue("tenant-limited", { tenant: "cx", ms: 4_000 }),
      client.enqueue("tenant-limited", { tenant: "cx", ms: 30_000 }),
    ]);
    await eventually(async () => {
      const views = await Promise.all([client.status(short.id), client.status(long.id)]);
      return views.every((view) => view.status === "running");
    });
    const cancelled = await client.enqueue("tenant-limited", { tenant: "cx", ms: 1 });
    await eventually(async () => (await client.status(cancelled.id)).status === "waiting");
    const next = await client.enqueue("tenant-limited", { tenant: "cx", ms: 1 });
    await eventually(async () => (await client.status(next.id)).status === "waiting");
    await client.cancel(cancelled.id, { reason: "not needed" });
    // The short lease is kept for the cancelled job, which ends at once and passes it on.
    const ran = await eventually(async () => {
      const view = await client.status(next.id);
      return view.status === "succeeded" ? view : undefined;
    }, 30_000);
    expect((await client.status(cancelled.id)).status).toBe("cancelled");
    // Not by the keeping running out.
    const freed = Date.parse((await client.status(short.id)).finishedAt as string);
    expect(Date.parse(ran.startedAt as string)).toBeLessThan(freed + LEASE_MS);
    // Not by the long job's end: that is many seconds away.
    expect(["pending", "running"]).toContain((await client.status(long.id)).status);
    expect(ran.attempts).toBe(1);
  });

  it("honours a lease kept by a runtime that stopped before sending its job, and wakes that job once it runs out", async () => {
    const first = await env.startRuntime();
    const bucket = await new Kvm(client.connection).open(FLOW_BUCKET);
    const held = JSON.stringify({ until: Date.now() + 3_600_000 });
    await bucket.put("c.k_lost.tenant-limited.0", held);
    await bucket.put("c.k_lost.tenant-limited.1", held);
    const kept = await client.enqueue("tenant-limited", { tenant: "lost", ms: 1 });
    await eventually(async () => (await client.status(kept.id)).status === "waiting");
    await first.stop();
    // What a runtime stopped in the middle of a hand-over leaves: slot 0 kept for the job, which
    // still waits in the stream.
    const until = Date.now() + 2_000;
    await bucket.put("c.k_lost.tenant-limited.0", JSON.stringify({ until, for: kept.id }));
    await env.startRuntime();
    // Arriving while the slot is kept for another job: it waits behind that job.
    const later = await client.enqueue("tenant-limited", { tenant: "lost", ms: 1 });
    await eventually(async () => (await client.status(later.id)).status === "waiting");
    const [first_, second] = await eventually(async () => {
      const views = await Promise.all([client.status(kept.id), client.status(later.id)]);
      return views.every((view) => view.status === "succeeded") ? views : undefined;
    }, 30_000);
    expect(Date.parse(first_?.startedAt as string)).toBeGreaterThanOrEqual(until - 50);
    expect(Date.parse(second?.startedAt as string)).toBeGreaterThanOrEqual(Date.parse(first_?.startedAt as string));
  });
});
