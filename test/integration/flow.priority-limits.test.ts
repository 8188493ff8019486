import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { JetfnClient } from "../../runtime/client";
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

describe("priority levels of a function", () => {
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
});
