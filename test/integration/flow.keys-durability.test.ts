import { type JetStreamManager, jetstreamManager } from "@nats-io/jetstream";
import { nanos } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from "vitest";
import type { JetfnClient } from "../../runtime/sdk/client";
import { runCli } from "../helpers/cli";
import { eventually, type TestEnvironment } from "../helpers/environment";
import { createItemsEnvironment, type ItemsEnvironment } from "../helpers/items-environment";

/**
 * Singleton and debounce claims against what the stream and the key-value bucket do over time: a
 * duplicate window that has passed, a claim write the server refuses for a while, a delayed-jobs
 * stream created again.
 */

let env: TestEnvironment;
let client: JetfnClient;
let manager: JetStreamManager;
let itemsEnded: ItemsEnvironment["ended"];

beforeAll(async () => {
  ({ env, client, ended: itemsEnded } = await createItemsEnvironment());
  manager = await jetstreamManager(client.connection);
});

afterAll(async () => {
  await env?.close();
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const ended = (id: string) => itemsEnded(id, 30_000);

async function rowsOf(invocation: string): Promise<number> {
  const [row] = await env.database.sql<{ count: number }[]>`
    select count(*)::int as count from items where invocation = ${invocation}`;
  return row?.count ?? 0;
}

describe("singleton claims", () => {
  it("answers a repeat of the holder's own id with the stored job, even past the duplicate window", async () => {
    await env.startRuntime();
    // A blocker keeps the function (concurrency 1) busy, so the singleton job waits in the queue.
    const blocker = await client.enqueue("write-then-wait", { name: "blocker", ms: 3_000 });
    const options = { id: "singleton-repeat-0001", singleton: { key: "repeat" } };
    const first = await client.enqueue("write-then-wait", { name: "repeat", ms: 0 }, options);
    expect(first.existing).toBe(false);
    // The stream forgets message ids after its duplicate window (2 minutes): shorten it to pass it.
    const info = await manager.streams.info("JETFN_JOBS");
    await manager.streams.update("JETFN_JOBS", { duplicate_window: nanos(500) });
    onTestFinished(async () => {
      await manager.streams.update("JETFN_JOBS", { duplicate_window: info.config.duplicate_window });
    });
    await sleep(1_500);
    const repeat = await client.enqueue("write-then-wait", { name: "repeat", ms: 0 }, options);
    expect(repeat).toMatchObject({ id: first.id, seq: first.seq, existing: true });
    expect((await ended(blocker.id)).status).toBe("succeeded");
    expect((await ended(first.id)).status).toBe("succeeded");
    const stored = await manager.streams.info("JETFN_JOBS", { subjects_filter: "fn.job.write-then-wait" });
    // The blocker and one copy of the singleton job: nothing was published again.
    expect(stored.state.subjects?.["fn.job.write-then-wait"] ?? 0).toBeLessThanOrEqual(2);
    expect(await rowsOf(first.id)).toBe(1);
  });

  it("keeps the key held after the grace period when writing the job's sequence into the claim failed at first", async () => {
    await env.startRuntime();
    // With a per-subject discard, the server takes a new key but refuses any write to it: the
    // claim is created, the write of the stored job's sequence into it fails, until restored.
    const bucket = "KV_JETFN_JOB_KEYS";
    const info = await manager.streams.info(bucket);
    expect(info.config.discard).toBe("new");
    await manager.streams.update(bucket, { discard_new_per_subject: true });
    let restored = false;
    const restore = async () => {
      if (restored) return;
      restored = true;
      await manager.streams.update(bucket, { discard_new_per_subject: false });
    };
    onTestFinished(restore);
    const singleton = { key: "seq-write" };
    const first = await client.enqueue("insert-item", { name: "seq-write-0" }, { singleton, delay: "2m" });
    onTestFinished(async () => {
      await client.cancel(first.id).catch(() => undefined);
    });
    expect(first.existing).toBe(false);
    await sleep(1_000);
    await restore();
    // Past the 30 s for which a claim without its job's sequence holds the key.
    await sleep(32_000);
    const second = await client.enqueue("insert-item", { name: "seq-write-1" }, { singleton });
    expect(second).toMatchObject({ id: first.id, existing: true });
  }, 60_000);
});

describe("debounce claims", () => {
  it("orders jobs across a delayed-jobs stream created again (its sequences start at 1 again)", async () => {
    const runtime = await env.startRuntime();
    const debounce = { key: "again", period: "300ms" };
    let last = { id: "" };
    for (let n = 0; n < 4; n++) last = await client.enqueue("insert-item", { name: `again-${n}` }, { debounce });
    expect((await ended(last.id)).status).toBe("succeeded");
    await runtime.stop();
    await manager.streams.delete("JETFN_JOBS_DELAYED");
    await env.startRuntime();
    // The first job of the new stream has a lower sequence than the claim's job had.
    const next = await client.enqueue("insert-item", { name: "again-next" }, { debounce });
    expect(next.supersededBy).toBeUndefined();
    expect((await ended(next.id)).status).toBe("succeeded");
    expect(await rowsOf(next.id)).toBe(1);
  });
});

describe("jetfn status", () => {
  it("shows a scheduled or running job's priority and its debounce or singleton key", async () => {
    await env.startRuntime();
    const status = async (id: string, json: boolean) => {
      const result = await runCli(json ? ["status", id, "--json"] : ["status", id], { NATS_URL: env.nats.url });
      expect(result).toMatchObject({ code: 0, stderr: "" });
      return result.stdout;
    };
    const scheduled = await client.enqueue(
      "insert-item",
      { name: "status-0" },
      { singleton: { key: "status:1" }, priority: 2, delay: "2m" },
    );
    onTestFinished(async () => {
      await client.cancel(scheduled.id).catch(() => undefined);
    });
    expect(JSON.parse(await status(scheduled.id, true))).toMatchObject({
      status: "scheduled",
      priority: 2,
      singletonKey: "status:1",
    });
    const text = await status(scheduled.id, false);
    expect(text).toMatch(/^priority: 2$/m);
    expect(text).toMatch(/^singleton key: "status:1"$/m);

    const debounced = await client.enqueue(
      "insert-item",
      { name: "status-1" },
      { debounce: { key: "d/1", period: "2m" } },
    );
    onTestFinished(async () => {
      await client.cancel(debounced.id).catch(() => undefined);
    });
    expect(JSON.parse(await status(debounced.id, true))).toMatchObject({ status: "scheduled", debounceKey: "d/1" });
    expect(await status(debounced.id, false)).toMatch(/^debounce key: "d\/1"$/m);

    // A job that was delayed keeps its key once moved; its priority comes from its subject. It runs
    // 25 s (cancelled at the end) so it is still running when the CLI reads it on a loaded machine.
    const running = await client.enqueue(
      "write-then-wait",
      { name: "status-2", ms: 25_000 },
      { singleton: { key: "status:2" }, priority: 1, delay: "200ms" },
    );
    onTestFinished(async () => {
      await client.cancel(running.id).catch(() => undefined);
    });
    await eventually(async () => (await client.status(running.id)).status === "running", 20_000);
    expect(JSON.parse(await status(running.id, true))).toMatchObject({
      status: "running",
      priority: 1,
      singletonKey: "status:2",
    });
    // Five CLI runs, each a Node start: about 10 s each beside two CPU burners.
  }, 150_000);
});
