import { Kvm } from "@nats-io/kv";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startDashboard } from "../../runtime/dashboard/server";
import { FLOW_BUCKET } from "../../runtime/flow/slot-board";
import type { JetfnClient } from "../../runtime/sdk/client";
import { runCli } from "../helpers/cli";
import { createTestEnvironment, eventually, type TestEnvironment } from "../helpers/environment";

/**
 * `jetfn status` shows what a job was enqueued with, its priority and its debounce or singleton
 * key, in every state: queued in the stream, waiting for a limit, running, and once it ended
 * (succeeded or dead). So do the dashboard's page of the job and `client.status`.
 */

let env: TestEnvironment;
let client: JetfnClient;

beforeAll(async () => {
  env = await createTestEnvironment();
  await env.database.sql`create table items (id serial primary key, name text not null, attempt int, invocation text)`;
  client = await env.client();
});

afterAll(async () => {
  await env?.close();
});

/** `jetfn status <id> --json` as a script reads it. */
async function statusJson(id: string): Promise<Record<string, unknown>> {
  const result = await runCli(["status", id, "--json"], { NATS_URL: env.nats.url });
  expect(result).toMatchObject({ code: 0, stderr: "" });
  return JSON.parse(result.stdout) as Record<string, unknown>;
}

async function statusText(id: string): Promise<string> {
  const result = await runCli(["status", id], { NATS_URL: env.nats.url });
  expect(result).toMatchObject({ code: 0, stderr: "" });
  return result.stdout;
}

async function reaches(id: string, status: string, timeoutMs = 30_000): Promise<void> {
  await eventually(async () => (await client.status(id)).status === status, timeoutMs);
}

describe("jetfn status shows a job's priority and keys", () => {
  it("while it is queued, while it runs, and after it succeeded; and on the dashboard's page", async () => {
    const runtime = await env.startRuntime();
    const dashboard = await startDashboard({ runtime, port: 0, token: "labels-token-0123456789" });
    const page = async (id: string) => (await fetch(`${dashboard.url}/invocations/${id}`)).text();
    try {
      // write-then-wait runs one job at a time: the blocker keeps the next one queued, long enough for
      // the checks below, which start the CLI twice (3-4 s each at load 10); under its 30 s timeout.
      const blocker = await client.enqueue("write-then-wait", { name: "blocker", ms: 25_000 });
      await reaches(blocker.id, "running");
      const job = await client.enqueue(
        "write-then-wait",
        { name: "labelled", ms: 12_000 },
        { priority: 2, singleton: { key: "labels:1" } },
      );
      expect(await client.status(job.id)).toMatchObject({
        status: "pending",
        function: "write-then-wait",
        priority: 2,
        singletonKey: "labels:1",
      });
      // Asked not to read the stream (as result() polls), it knows only that the job is pending.
      const unread = await client.status(job.id, { stream: false });
      expect(unread).toMatchObject({ status: "pending", function: null });
      expect(unread).not.toHaveProperty("singletonKey");
      // A debounced job, moved to the queue when due, carries its key there.
      const debounced = await client.enqueue(
        "write-then-wait",
        { name: "debounced", ms: 0 },
        { debounce: { key: "labels:d", period: "100ms" } },
      );
      await eventually(async () => (await client.status(debounced.id)).status === "pending");
      expect(await client.status(debounced.id)).toMatchObject({
        function: "write-then-wait",
        debounceKey: "labels:d",
      });
      expect(await statusJson(job.id)).toMatchObject({ status: "pending", priority: 2, singletonKey: "labels:1" });
      const queued = await statusText(job.id);
      expect(queued).toMatch(/^priority: 2$/m);
      expect(queued).toMatch(/^singleton key: "labels:1"$/m);
      expect(await page(job.id)).toMatch(/enqueued with priority <strong class="priority">2<\/strong>/);

      await reaches(job.id, "running", 60_000);
      expect(await statusJson(job.id)).toMatchObject({ status: "running", priority: 2, singletonKey: "labels:1" });

      await reaches(job.id, "succeeded");
      expect(await statusJson(job.id)).toMatchObject({ status: "succeeded", priority: 2, singletonKey: "labels:1" });
      expect(await statusText(job.id)).toMatch(/^singleton key: "labels:1"$/m);
      const ended = await page(job.id);
      expect(ended).toMatch(/enqueued with priority <strong class="priority">2<\/strong>/);
      expect(ended).toContain('singleton key <code class="singleton-key">labels:1</code>');
      // A job enqueued with neither shows neither.
      const plain = await statusJson(blocker.id);
      expect(plain).toMatchObject({ status: "succeeded" });
      expect(plain).not.toHaveProperty("priority");
      expect(plain).not.toHaveProperty("singletonKey");
      expect(await page(blocker.id)).not.toContain("enqueued with");
    } finally {
      await dashboard.close();
    }
  }, 150_000);

  it("after it died", async () => {
    await env.startRuntime();
    const job = await client.enqueue(
      "non-retryable",
      { customer: "nobody" },
      { priority: 1, debounce: { key: "labels/dead", period: "100ms" } },
    );
    await reaches(job.id, "dead");
    expect(await statusJson(job.id)).toMatchObject({ status: "dead", priority: 1, debounceKey: "labels/dead" });
    expect(await statusText(job.id)).toMatch(/^debounce key: "labels\/dead"$/m);
  }, 60_000);

  it("while it waits for a concurrency limit, and after it was woken and ran", async () => {
    await env.startRuntime();
    // Both slots of tenant "labels" taken for 15 s, as by two running jobs.
    // The bucket is made when a runtime deploys a function with limits.
    const bucket = await eventually(() => new Kvm(client.connection).open(FLOW_BUCKET).catch(() => undefined));
    // Long enough for the status checks below while it waits (the CLI takes 3-4 s at load 10).
    const held = JSON.stringify({ until: Date.now() + 15_000 });
    await bucket.put("c.k_labels.tenant-limited.0", held);
    await bucket.put("c.k_labels.tenant-limited.1", held);
    const job = await client.enqueue(
      "tenant-limited",
      { tenant: "labels", ms: 1 },
      { priority: 3, singleton: { key: "labels:w" } },
    );
    await reaches(job.id, "waiting");
    expect(await statusJson(job.id)).toMatchObject({
      status: "waiting",
      waitingFor: "concurrency limit, key k_labels",
      priority: 3,
      singletonKey: "labels:w",
    });
    await reaches(job.id, "succeeded");
    expect(await statusJson(job.id)).toMatchObject({ status: "succeeded", priority: 3, singletonKey: "labels:w" });
  }, 90_000);
});
