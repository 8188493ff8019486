import { jetstreamManager } from "@nats-io/jetstream";
import { headers as natsHeaders } from "@nats-io/transport-node";
import { drizzle } from "drizzle-orm/postgres-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { enqueueInTransaction } from "../../runtime/db/outbox";
import type { JetfnClient } from "../../runtime/sdk/client";
import { toNanos } from "../../runtime/support/duration";
import { eventually, type TestEnvironment } from "../helpers/environment";
import { createItemsEnvironment, type ItemsEnvironment } from "../helpers/items-environment";

// A keyed outbox row enqueued again (its delete failed, or the runtime stopped before it) is the
// same job as the first time, whatever became of that job since. Repeating it must not supersede
// the job when it already moved and runs (within the duplicate window, the publish answers
// `duplicate`), nor, past that window, store a fresh copy that supersedes the key's later job.
let env: TestEnvironment;
let client: JetfnClient;
let ended: ItemsEnvironment["ended"];
let namesLike: ItemsEnvironment["namesLike"];

beforeAll(async () => {
  ({ env, client, ended, namesLike } = await createItemsEnvironment());
});

afterAll(async () => {
  await env?.close();
});

/** Writes a keyed row as an app does, and waits until the relay took it out of the outbox. */
async function relayRow(
  fn: string,
  input: Record<string, unknown>,
  options: Parameters<typeof enqueueInTransaction>[3],
) {
  const db = drizzle(env.database.sql);
  await db.transaction((tx) => enqueueInTransaction(tx, fn, input, options));
  await eventually(async () => (await env.database.sql`select id from jetfn.outbox`).length === 0, 15_000);
}

describe("a keyed outbox row enqueued again", () => {
  it("leaves its running job alone when a later job of its debounce key holds the key", {
    timeout: 90_000,
  }, async () => {
    await env.startRuntime();
    const row = { id: "repeat-running-0001", debounce: { key: "repeat-running", period: "200ms" } };
    await relayRow("write-then-wait", { name: "rep-first", ms: 4_000 }, row);
    await eventually(async () => (await client.status(row.id)).status === "running", 15_000);
    // A later job of the key takes the claim while the first one runs.
    const later = await client.enqueue(
      "write-then-wait",
      { name: "rep-later", ms: 0 },
      { debounce: { key: "repeat-running", period: "1s" } },
    );
    // The relay enqueues the first row again: JetStream answers the publish as a duplicate.
    await relayRow("write-then-wait", { name: "rep-first", ms: 4_000 }, row);
    const outcome = { first: (await ended(row.id, 30_000)).status, later: (await ended(later.id, 30_000)).status };
    expect(outcome).toEqual({ first: "succeeded", later: "succeeded" });
    expect((await namesLike("rep-")).sort()).toEqual(["rep-first", "rep-later"]);
  });

  it("past the duplicate window, does not store the job again over the key's later job", {
    timeout: 90_000,
  }, async () => {
    await env.startRuntime();
    // A short duplicate window on the delayed-jobs stream stands for the 2 minutes that passed.
    const manager = await jetstreamManager(client.connection);
    const delayed = (await manager.streams.info("JETFN_JOBS_DELAYED")).config;
    await manager.streams.update("JETFN_JOBS_DELAYED", { ...delayed, duplicate_window: toNanos(1_000) });
    try {
      const row = { id: "repeat-late-0001", debounce: { key: "repeat-late", period: "200ms" } };
      await relayRow("insert-item", { name: "late-first" }, row);
      expect((await ended(row.id)).status).toBe("succeeded");
      const later = await client.enqueue(
        "insert-item",
        { name: "late-later" },
        { debounce: { key: "repeat-late", period: "3s" } },
      );
      await new Promise((resolve) => setTimeout(resolve, 1_500));
      await relayRow("insert-item", { name: "late-first" }, row);
      expect((await ended(later.id, 30_000)).status).toBe("succeeded");
      expect((await namesLike("late-")).sort()).toEqual(["late-first", "late-later"]);
    } finally {
      await manager.streams.update("JETFN_JOBS_DELAYED", delayed);
    }
  });
});

describe("a keyed enqueue whose key bucket does not answer", () => {
  it("answers E_UNAVAILABLE (retryable), not E_HANDLER_FAILED", { timeout: 60_000 }, async () => {
    const runtime = await env.startRuntime();
    // Runs last in this file: without its stream, every request to the bucket times out.
    const manager = await jetstreamManager(client.connection);
    await manager.streams.delete("KV_JETFN_JOB_KEYS");
    const header = natsHeaders();
    header.set("Jetfn-Function", "insert-item");
    header.set("Jetfn-Singleton-Key", "no-bucket");
    const reply = await client.connection.request("jetfn.api.enqueue", JSON.stringify({ name: "no-bucket" }), {
      headers: header,
      timeout: 20_000,
    });
    const answer = reply.json<{ error?: { code: string } }>();
    expect({ status: reply.headers?.get("Nats-Service-Error-Code"), code: answer.error?.code }).toEqual({
      status: "503",
      code: "E_UNAVAILABLE",
    });
    expect(runtime.logs.matching("A keyed enqueue failed")).toEqual([]);
  });
});
