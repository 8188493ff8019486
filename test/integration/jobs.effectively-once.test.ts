import { jetstreamManager } from "@nats-io/jetstream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { JetfnClient } from "../../runtime/client";
import { createTestEnvironment, eventually, type TestEnvironment } from "../helpers/environment";

// Two NATS users: "runtime" may do everything; "lossy" may not publish acknowledgements, so its
// acks and in-progress pings vanish. A runtime connected as "lossy" behaves exactly like one that
// crashed between committing a job and acknowledging it, or lost its lease while still working.
const NATS_CONFIG = `
authorization {
  users = [
    { user: runtime, password: runtime-secret }
    { user: lossy, password: lossy-secret, permissions: { publish: { deny: ["$JS.ACK.>"] } } }
  ]
}
`;

let env: TestEnvironment;
let client: JetfnClient;

beforeAll(async () => {
  env = await createTestEnvironment({ config: NATS_CONFIG, user: "runtime", password: "runtime-secret" });
  await env.database.sql`create table items (id serial primary key, name text not null, attempt int, invocation text)`;
  client = await env.client();
});

afterAll(async () => {
  await env?.close();
});

async function rows(name: string): Promise<{ attempt: number; invocation: string }[]> {
  return (await env.database.sql`select attempt, invocation from items where name = ${name} order by id`) as never;
}

describe("effectively-once database effects", () => {
  it("acks a redelivered job that already committed, without running it again", async () => {
    const lossy = await env.startRuntime({ natsUser: "lossy", natsPassword: "lossy-secret" });
    const job = await client.enqueue("insert-quick", { name: "committed-once" });
    await eventually(async () => (await client.status(job.id)).status === "succeeded");
    // The commit landed but its ack was lost: stop the runtime, as if it had crashed.
    await lossy.stop();

    const healthy = await env.startRuntime();
    const skipped = await eventually(
      () =>
        healthy.logs.lines.find(
          (line) => line.invocationId === job.id && String(line.msg).includes("already succeeded"),
        ),
      15_000,
    );
    expect(skipped.attempt).toBeGreaterThanOrEqual(2);
    expect(await rows("committed-once")).toEqual([{ attempt: 1, invocation: job.id }]);
    const manager = await jetstreamManager(healthy.nats);
    await eventually(async () => {
      const info = await manager.consumers.info("JETFN_JOBS", "insert-quick");
      return info.num_ack_pending === 0 && info.num_pending === 0;
    });
    await healthy.stop();
  });

  it("lets only one of two overlapping attempts commit when the first loses its lease", async () => {
    // A 1s ack wait: the lossy runtime's lease on attempt 1 lapses while it still sleeps.
    const lossy = await env.startRuntime({ natsUser: "lossy", natsPassword: "lossy-secret", maxAckWait: "1s" });
    const job = await client.enqueue("slow-first-attempt", { name: "fenced", firstAttemptMs: 3_000 });
    const started = new Set<string>();
    lossy.events.on("invocation:start", (event) => started.add(event.invocationId));
    await eventually(() => started.has(job.id));
    const healthy = await env.startRuntime({ maxAckWait: "1s" });
    // Attempt 2 runs on the healthy runtime and commits first.
    await eventually(async () => (await client.status(job.id)).status === "succeeded");
    // Attempt 1 then finishes its sleep and tries to commit: the fence rolls it back.
    const refused = await eventually(() =>
      lossy.logs.lines.find(
        (line) => line.invocationId === job.id && String(line.msg).includes("rolled back its writes"),
      ),
    );
    expect(refused.attempt).toBe(1);
    expect(await rows("fenced")).toEqual([{ attempt: 2, invocation: job.id }]);
    await Promise.all([lossy.stop(), healthy.stop()]);
  });

  it("keeps the lease of a handler that runs longer than the ack wait (in-progress pings)", async () => {
    const runtime = await env.startRuntime({ maxAckWait: "1s" });
    const starts: number[] = [];
    runtime.events.on("invocation:start", (event) => starts.push(event.attempt));
    const job = await client.enqueue("sleepy-insert", { name: "long-lease", ms: 2_500 });
    await eventually(async () => (await client.status(job.id)).status === "succeeded");
    // Give a redelivery, had there been one, time to show up.
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    expect(starts).toEqual([1]);
    expect(await rows("long-lease")).toEqual([{ attempt: 1, invocation: job.id }]);
    const manager = await jetstreamManager(runtime.nats);
    const info = await manager.consumers.info("JETFN_JOBS", "sleepy-insert");
    expect(info.config.ack_wait).toBe(1_000_000_000);
    expect(info.delivered.consumer_seq).toBe(1);
    await runtime.stop();
  });

  it("refuses a first delivery whose id already committed, rolling its writes back", async () => {
    const runtime = await env.startRuntime();
    await env.database.sql`
      insert into jetfn.invocations (id, function, status, attempts)
      values ('already-done-0001', 'insert-quick', 'succeeded', 1)`;
    const published = await client.enqueue("insert-quick", { name: "never-twice" }, { id: "already-done-0001" });
    expect(published.duplicate).toBe(false);
    await eventually(() =>
      runtime.logs.lines.some(
        (line) => line.invocationId === "already-done-0001" && String(line.msg).includes("finished this job first"),
      ),
    );
    expect(await rows("never-twice")).toEqual([]);
    await runtime.stop();
  });
});
