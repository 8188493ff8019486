import { Kvm } from "@nats-io/kv";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FLOW_BUCKET } from "../../runtime/flow/slot-board";
import { replayJobs } from "../../runtime/nats/replay-jobs";
import type { JetfnClient } from "../../runtime/sdk/client";
import { createTestEnvironment, eventually, type TestEnvironment } from "../helpers/environment";
import { finishedRuns, maxOverlap } from "../helpers/flow-runs";

let env: TestEnvironment;
let client: JetfnClient;

beforeAll(async () => {
  env = await createTestEnvironment();
  client = await env.client();
});

afterAll(async () => {
  await env?.close();
});

async function enqueueAll(fn: string, inputs: unknown[]): Promise<string[]> {
  const ids: string[] = [];
  for (let at = 0; at < inputs.length; at += 200) {
    const chunk = await Promise.all(
      inputs.slice(at, at + 200).map((input) => client.enqueue(fn as never, input as never)),
    );
    ids.push(...chunk.map((job) => job.id));
  }
  return ids;
}

describe("concurrency limits across runtimes", () => {
  it("runs at most three jobs of a function at once across two runtimes of eight slots each, without spending attempts", async () => {
    await Promise.all([env.startRuntime(), env.startRuntime()]);
    await enqueueAll(
      "globally-limited",
      Array.from({ length: 24 }, () => ({ ms: 150 })),
    );
    const runs = await finishedRuns(env, "globally-limited", 24);
    expect(runs.map((run) => run.status)).toEqual(Array(24).fill("succeeded"));
    // Waiting for a slot is not an attempt.
    expect(runs.map((run) => run.attempts)).toEqual(Array(24).fill(1));
    expect(maxOverlap(runs)).toBeLessThanOrEqual(3);
    expect(maxOverlap(runs)).toBe(3);
  });

  it("limits each tenant to two at once while tenants run side by side, and keeps a retried job's attempts", async () => {
    await Promise.all([env.startRuntime(), env.startRuntime()]);
    const inputs = ["a", "b", "c"].flatMap((tenant) =>
      Array.from({ length: 10 }, (_, index) => ({ tenant, ms: 100, failTimes: index === 9 ? 1 : 0 })),
    );
    await enqueueAll("tenant-limited", inputs);
    const runs = await finishedRuns(env, "tenant-limited", 30);
    expect(runs.map((run) => run.status)).toEqual(Array(30).fill("succeeded"));
    for (const tenant of ["a", "b", "c"]) {
      const own = runs.filter((run) => run.input?.tenant === tenant);
      expect(maxOverlap(own)).toBeLessThanOrEqual(2);
      // The job that failed once ran its second attempt as attempt 2, wherever it waited between.
      expect(own.map((run) => run.attempts).sort()).toEqual([...Array(9).fill(1), 2]);
    }
    expect(maxOverlap(runs)).toBeGreaterThan(2);
  });

  it("gives back the slots of a runtime that died holding them once their lease runs out", async () => {
    const nc = client.connection;
    const kv = await new Kvm(nc).open(FLOW_BUCKET).catch(() => undefined);
    await env.startRuntime();
    const bucket = kv ?? (await new Kvm(nc).open(FLOW_BUCKET));
    // What a killed runtime leaves: both slots of tenant "dead" held for two more seconds, never freed.
    const until = Date.now() + 2_000;
    await bucket.put("c.k_dead.tenant-limited.0", JSON.stringify({ until }));
    await bucket.put("c.k_dead.tenant-limited.1", JSON.stringify({ until }));
    const [id] = await enqueueAll("tenant-limited", [{ tenant: "dead", ms: 1 }]);
    const view = await eventually(async () => {
      const status = await client.status(id as string);
      return status.status === "succeeded" ? status : undefined;
    }, 20_000);
    expect(Date.parse(view.startedAt as string)).toBeGreaterThanOrEqual(until - 50);
    expect(view.attempts).toBe(1);
  });

  it("shows a job waiting for its key's slots as waiting, and a cancelled one never runs", async () => {
    await env.startRuntime();
    const bucket = await new Kvm(client.connection).open(FLOW_BUCKET);
    const until = Date.now() + 3_000;
    await bucket.put("c.k_held.tenant-limited.0", JSON.stringify({ until }));
    await bucket.put("c.k_held.tenant-limited.1", JSON.stringify({ until }));
    const [kept, dropped] = await enqueueAll("tenant-limited", [
      { tenant: "held", ms: 1 },
      { tenant: "held", ms: 1 },
    ]);
    const view = await eventually(async () => {
      const status = await client.status(kept as string);
      return status.status === "waiting" ? status : undefined;
    });
    expect(view).toMatchObject({
      function: "tenant-limited",
      attempts: 0,
      waitingFor: "concurrency limit, key k_held",
    });
    await client.cancel(dropped as string, { reason: "not needed" });
    const done = await finishedRuns(env, "tenant-limited", 0).then(() =>
      eventually(async () => {
        const [a, b] = await Promise.all([client.status(kept as string), client.status(dropped as string)]);
        return a.status === "succeeded" && b.status === "cancelled" ? [a, b] : undefined;
      }, 20_000),
    );
    expect(done[1]?.result ?? null).toBeNull();
    expect(Date.parse(done[0]?.startedAt as string)).toBeGreaterThanOrEqual(until - 50);
  });

  it("replays a job that waited once, though it is stored twice (as enqueued and as woken)", async () => {
    const sinceMs = Date.now();
    await env.startRuntime();
    const bucket = await new Kvm(client.connection).open(FLOW_BUCKET);
    const until = Date.now() + 2_000;
    await bucket.put("c.k_replayed.tenant-limited.0", JSON.stringify({ until }));
    await bucket.put("c.k_replayed.tenant-limited.1", JSON.stringify({ until }));
    const [id] = await enqueueAll("tenant-limited", [{ tenant: "replayed", ms: 1 }]);
    await eventually(async () => (await client.status(id as string)).status === "succeeded", 20_000);
    const replayed = await replayJobs({
      source: client.connection,
      target: client.connection,
      stream: "JETFN_JOBS",
      fn: "tenant-limited",
      sinceMs,
    });
    expect(replayed.map((job) => job.replayOf)).toEqual([id]);
  });

  it("keeps waiting jobs across a restart of every runtime", async () => {
    const first = await env.startRuntime();
    await enqueueAll(
      "tenant-limited",
      Array.from({ length: 12 }, () => ({ tenant: "restart", ms: 300 })),
    );
    await eventually(async () => {
      const [row] = await env.database
        .sql`select count(*)::int as n from jetfn.invocations where input->>'tenant' = 'restart'`;
      return (row?.n as number) >= 2;
    }, 20_000);
    await first.stop();
    await env.startRuntime();
    const runs = (await finishedRuns(env, "tenant-limited", 12 + 31 + 2 + 2, 60_000)).filter(
      (run) => run.input?.tenant === "restart",
    );
    expect(runs).toHaveLength(12);
    expect(runs.every((run) => run.status === "succeeded")).toBe(true);
    expect(maxOverlap(runs)).toBeLessThanOrEqual(2);
  });
});
