import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { JetfnClient } from "../../runtime/sdk/client";
import { createTestEnvironment, eventually, type TestEnvironment } from "../helpers/environment";

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

async function countRows(prefix: string): Promise<{ rows: number; distinct: number }> {
  const [row] = await env.database.sql`
    select count(*)::int as rows, count(distinct invocation)::int as distinct
    from items where name like ${`${prefix}%`}`;
  return row as { rows: number; distinct: number };
}

// More jobs than one runtime holds at once (concurrency 16, so at most 32 pulled).
const JOBS = 120;

describe("graceful shutdown", () => {
  it("finishes jobs in flight, leaves the rest queued, and a new runtime completes them: nothing lost or doubled", async () => {
    const first = await env.startRuntime();
    const jobs = await Promise.all(
      Array.from({ length: JOBS }, (_, index) => client.enqueue("sleepy-insert", { name: `drain-${index}`, ms: 300 })),
    );
    await eventually(async () => (await countRows("drain-")).rows >= 5);
    const stopping = first.stop();
    // While draining, jobs already taken complete; their rows appear without new pulls.
    await stopping;
    const afterFirst = await countRows("drain-");
    expect(afterFirst.rows).toBeGreaterThan(0);
    expect(afterFirst.rows).toBeLessThan(JOBS);

    const second = await env.startRuntime();
    const done = await eventually(async () => {
      const counts = await countRows("drain-");
      return counts.rows === JOBS ? counts : undefined;
    }, 20_000);
    expect(done.distinct).toBe(JOBS);
    for (const job of jobs) expect((await client.status(job.id)).status).toBe("succeeded");
    await second.stop();
  }, 40_000);

  it("aborts what outlives the grace period, rolls it back, and the job runs again elsewhere", async () => {
    const impatient = await env.startRuntime({ shutdownGrace: "300ms" });
    const started = new Set<string>();
    impatient.events.on("invocation:start", (event) => started.add(event.invocationId));
    const job = await client.enqueue("sleepy-insert", { name: "aborted-once", ms: 2_000 });
    await eventually(() => started.has(job.id));
    await impatient.stop();
    expect(impatient.logs.matching("aborted by shutdown")).toHaveLength(1);
    expect((await countRows("aborted-once")).rows).toBe(0);

    await env.startRuntime();
    await eventually(async () => (await client.status(job.id)).status === "succeeded", 15_000);
    const rows = await env.database.sql`select attempt from items where name = 'aborted-once'`;
    expect(rows).toEqual([{ attempt: 2 }]);
  }, 30_000);
});
