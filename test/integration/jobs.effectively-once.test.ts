import { jetstreamManager } from "@nats-io/jetstream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { JetfnClient } from "../../runtime/sdk/client";
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

// Every runtime a test starts stops when that test ends, passed or failed (see startRuntime), so a
// failed test leaves none behind to take the next test's jobs. The waits are generous: on a loaded
// machine starting a runtime and a redelivery take seconds.
const SLOW_MS = 60_000;

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
  it("acks a redelivered job that already committed, without running it again", { timeout: 120_000 }, async () => {
    // A 5s ack wait: short enough that the job comes back soon after the crash, long enough that
    // the lossy runtime (whose acks vanish) does not use up the job's deliveries before it stops.
    const lossy = await env.startRuntime({ natsUser: "lossy", natsPassword: "lossy-secret", maxAckWait: "5s" });
    const job = await client.enqueue("insert-item", { name: "committed-once" });
    await eventually(async () => (await client.status(job.id)).status === "succeeded", SLOW_MS);
    // The commit landed but its ack was lost: stop the runtime, as if it had crashed.
    await lossy.stop();

    const healthy = await env.startRuntime({ maxAckWait: "5s" });
    // Redelivered to the healthy runtime and acknowledged there: nothing pending any more.
    const manager = await jetstreamManager(healthy.nats);
    const drained = await eventually(async () => {
      const info = await manager.consumers.info("JETFN_JOBS", "insert-item");
      return info.num_ack_pending === 0 && info.num_pending === 0 && info.delivered.consumer_seq >= 2 && info;
    }, SLOW_MS);
    expect(drained.delivered.consumer_seq).toBeGreaterThanOrEqual(2);
    // Not run again: still the first attempt's one row.
    expect(await rows("committed-once")).toEqual([{ attempt: 1, invocation: job.id }]);
  });

  it("lets only one of two overlapping attempts commit when the first loses its lease", {
    timeout: 120_000,
  }, async () => {
    // A 1s ack wait: the lossy runtime's lease on attempt 1 lapses while it still sleeps.
    const lossy = await env.startRuntime({ natsUser: "lossy", natsPassword: "lossy-secret", maxAckWait: "1s" });
    const job = await client.enqueue("slow-first-attempt", { name: "fenced", firstAttemptMs: 3_000 });
    const started = new Set<string>();
    lossy.events.on("invocation:start", (event) => started.add(event.invocationId));
    await eventually(() => started.has(job.id), SLOW_MS);
    await env.startRuntime({ maxAckWait: "1s" });
    // Attempt 2 (on either runtime: the lossy one holds no lease) commits first.
    await eventually(async () => (await client.status(job.id)).status === "succeeded", SLOW_MS);
    // Attempt 1 then finishes its sleep and tries to commit: the fence rolls it back.
    const refused = await eventually(
      () =>
        lossy.logs.lines.find(
          (line) => line.invocationId === job.id && String(line.msg).includes("rolled back its writes"),
        ),
      SLOW_MS,
    );
    expect(refused.attempt).toBe(1);
    expect(await rows("fenced")).toEqual([{ attempt: 2, invocation: job.id }]);
  });

  it("keeps the lease of a handler that runs longer than the ack wait (in-progress pings)", {
    timeout: 120_000,
  }, async () => {
    // A 1s ack wait and a 3s handler whose timeout is a minute: only in-progress pings (one every
    // third of the ack wait) keep the lease; a timeout cannot end the attempt early, even on a loaded machine.
    const runtime = await env.startRuntime({ maxAckWait: "1s" });
    const starts: number[] = [];
    runtime.events.on("invocation:start", (event) => starts.push(event.attempt));
    const job = await client.enqueue("outlives-ack-wait", { name: "long-lease", ms: 3_000 });
    await eventually(async () => (await client.status(job.id)).status === "succeeded", SLOW_MS);
    // Once acknowledged, the message cannot come back: every delivery it had is counted now.
    const manager = await jetstreamManager(runtime.nats);
    const info = await eventually(async () => {
      const current = await manager.consumers.info("JETFN_JOBS", "outlives-ack-wait");
      return current.num_ack_pending === 0 && current.num_pending === 0 && current;
    }, SLOW_MS);
    expect(info.config.ack_wait).toBe(1_000_000_000);
    expect(info.delivered.consumer_seq).toBe(1);
    expect(starts).toEqual([1]);
    expect(await rows("long-lease")).toEqual([{ attempt: 1, invocation: job.id }]);
  });

  it("refuses a first delivery whose id already committed, rolling its writes back", { timeout: 120_000 }, async () => {
    const runtime = await env.startRuntime();
    await env.database.sql`
      insert into jetfn.invocations (id, function, status, attempts)
      values ('already-done-0001', 'insert-quick', 'succeeded', 1)`;
    const published = await client.enqueue("insert-quick", { name: "never-twice" }, { id: "already-done-0001" });
    expect(published.duplicate).toBe(false);
    await eventually(
      () =>
        runtime.logs.lines.some(
          (line) => line.invocationId === "already-done-0001" && String(line.msg).includes("finished this job first"),
        ),
      SLOW_MS,
    );
    expect(await rows("never-twice")).toEqual([]);
  });
});
