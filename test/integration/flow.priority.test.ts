import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { JetfnClient } from "../../runtime/sdk/client";
import { runCli } from "../helpers/cli";
import { createTestEnvironment, eventually, type TestEnvironment } from "../helpers/environment";

let env: TestEnvironment;
let client: JetfnClient;

beforeAll(async () => {
  env = await createTestEnvironment();
  await env.database.sql`create table starts (position bigserial primary key, name text not null, invocation text)`;
  await env.database.sql`create table items (id serial primary key, name text not null, attempt int, invocation text)`;
  client = await env.client();
});

afterAll(async () => {
  await env?.close();
});

const BACKLOG = 5_000;
const URGENT = 10;

/** Enqueues `count` normal start-order jobs named `<prefix>-<n>`, 200 publishes at a time. */
async function enqueueBacklog(prefix: string, count: number): Promise<void> {
  for (let from = 0; from < count; from += 200) {
    const batch = Array.from({ length: Math.min(200, count - from) }, (_, index) =>
      client.enqueue("start-order", { name: `${prefix}-${from + index}` }),
    );
    await Promise.all(batch);
  }
}

async function positionsOf(prefix: string): Promise<number[]> {
  const rows = await env.database.sql<{ rank: string }[]>`
    select rank from (select name, rank() over (order by position) as rank from starts) ranked
    where name like ${`${prefix}-%`} order by rank`;
  return rows.map((row) => Number(row.rank));
}

async function started(): Promise<number> {
  const [row] = await env.database.sql<{ count: string }[]>`select count(*) from starts`;
  return Number(row?.count ?? 0);
}

describe("priority, with two runtimes", () => {
  it("starts high-priority jobs stored behind 5,000 normal ones within the first windows, after a restart", async () => {
    await env.database.sql`truncate starts`;
    // Stored while no runtime runs: what a restart finds.
    const first = await env.startRuntime();
    await first.stop();
    await enqueueBacklog("low", BACKLOG);
    for (let n = 0; n < URGENT; n++) await client.enqueue("start-order", { name: `high-${n}` }, { priority: 3 });
    const overview = await runCli(["ls", "--json"], { NATS_URL: env.nats.url });
    expect(overview.stdout).toContain('"queuedPriority":10');
    await Promise.all([env.startRuntime(), env.startRuntime()]);
    await eventually(async () => (await positionsOf("high")).length === URGENT, 60_000);
    const positions = await positionsOf("high");
    // A window is at most 4 slots x 32 jobs per runtime; without priority they would start near 5,000.
    expect(Math.max(...positions)).toBeLessThan(600);
    await eventually(async () => (await started()) >= BACKLOG + URGENT, 120_000);
  }, 180_000);

  it("starts high-priority jobs enqueued while a backlog drains before the rest of it", async () => {
    await env.database.sql`truncate starts`;
    await Promise.all([env.startRuntime(), env.startRuntime()]);
    await enqueueBacklog("busy", BACKLOG);
    await eventually(async () => (await started()) >= 200, 60_000);
    const before = await started();
    await Promise.all(
      Array.from({ length: URGENT }, (_, n) => client.enqueue("start-order", { name: `urgent-${n}` }, { priority: 1 })),
    );
    await eventually(async () => (await positionsOf("urgent")).length === URGENT, 60_000);
    const positions = await positionsOf("urgent");
    expect(Math.max(...positions) - before).toBeLessThan(600);
    expect(await started()).toBeLessThan(BACKLOG);
  }, 180_000);

  it("takes a priority from ctx.enqueue through the outbox and from the CLI", async () => {
    await env.database.sql`truncate starts`;
    await env.startRuntime();
    await client.enqueueAndWait("enqueue-urgent", { name: "outbox-0", priority: 2 });
    const cli = await runCli(["enqueue", "start-order", '{"name":"cli-0"}', "--priority", "2"], {
      NATS_URL: env.nats.url,
    });
    expect(cli.stderr).toBe("");
    expect(cli.code).toBe(0);
    await eventually(async () => (await positionsOf("outbox")).length === 1 && (await positionsOf("cli")).length === 1);
  }, 60_000);
});
