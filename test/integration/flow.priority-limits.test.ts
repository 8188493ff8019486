import { jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FLOW_BUCKET } from "../../runtime/flow/slot-board";
import { WOKEN_HEADER } from "../../runtime/flow/wake-tag";
import { ID_HEADER } from "../../runtime/nats/subjects";
import type { JetfnClient } from "../../runtime/sdk/client";
import { createTestEnvironment, eventually, type TestEnvironment } from "../helpers/environment";
import { freePort } from "../helpers/free-port";

let env: TestEnvironment;
let client: JetfnClient;
let monitorPort: number;

beforeAll(async () => {
  monitorPort = await freePort();
  env = await createTestEnvironment({ config: `http: "127.0.0.1:${monitorPort}"\n` });
  client = await env.client();
});

afterAll(async () => {
  await env?.close();
});

/** Every subject some connection to the server subscribes to (its monitoring endpoint, /connz). */
async function subscribedSubjects(): Promise<string[]> {
  const response = await fetch(`http://127.0.0.1:${monitorPort}/connz?subs=1`);
  const body = (await response.json()) as { connections?: { subscriptions_list?: string[] }[] };
  return (body.connections ?? []).flatMap((connection) => connection.subscriptions_list ?? []);
}

async function succeeded(id: string): Promise<void> {
  await eventually(async () => (await client.status(id)).status === "succeeded", 20_000);
}

describe("priority jobs of a function with a concurrency limit", () => {
  it("stops hearing a priority level's publishes once the level's puller runs", async () => {
    await env.startRuntime();
    await eventually(async () => (await subscribedSubjects()).includes("fn.job.tenant-limited.P3"));
    const { id } = await client.enqueue("tenant-limited", { tenant: "heard", ms: 1 }, { priority: 3 });
    await succeeded(id);
    const subjects = await subscribedSubjects();
    // The puller fetches the level's jobs: a subscription would bring every job's body once more.
    expect(subjects).not.toContain("fn.job.tenant-limited.P3");
    // The levels not used yet are still listened for.
    expect(subjects).toContain("fn.job.tenant-limited.P2");
  });

  it("wakes a priority job that waited behind the limit to its priority subject", async () => {
    await env.startRuntime();
    const bucket = await new Kvm(client.connection).open(FLOW_BUCKET);
    // Both slots of tenant "busy" held for two more seconds, as by jobs running elsewhere.
    const until = Date.now() + 2_000;
    await bucket.put("c.k_busy.tenant-limited.0", JSON.stringify({ until }));
    await bucket.put("c.k_busy.tenant-limited.1", JSON.stringify({ until }));
    const { id } = await client.enqueue("tenant-limited", { tenant: "busy", ms: 1 }, { priority: 2 });
    await eventually(async () => (await client.status(id)).status === "waiting");
    await succeeded(id);
    const manager = await jetstreamManager(client.connection);
    const woken = await manager.streams.getMessage("JETFN_JOBS", { last_by_subj: "fn.job.tenant-limited.P2" });
    expect(woken?.header?.get(ID_HEADER)).toBe(id);
    expect(woken?.header?.get(WOKEN_HEADER)).toBeTruthy();
    const status = await client.status(id);
    expect(Date.parse(status.startedAt as string)).toBeGreaterThanOrEqual(until - 50);
    expect(status.attempts).toBe(1);
  });
});
