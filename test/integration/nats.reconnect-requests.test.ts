import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestEnvironment, eventually, type TestEnvironment } from "../helpers/environment";
import { startPartitionProxy } from "../helpers/partition-proxy";

// After a reconnect a runtime pulls again and looks for priority jobs published while it was away
// (its subscriptions on the levels' subjects heard none of them). With many functions, that look is
// one read of the stream's subjects and, when levels need it, of the consumers: not one stream info
// and up to three consumer infos per function, a burst of hundreds of requests at once.

const FUNCTIONS = 150;
/** Functions that ran priority jobs before the reconnect: their levels are stored and pulled. */
const RAN_BEFORE = 30;
/** Functions whose priority jobs are published while the runtime is disconnected. */
const PUBLISHED_AWAY = ["burst-007", "burst-042", "burst-149"];

let env: TestEnvironment;
let dir: string;
let observer: NatsConnection;
/** Subjects of the JetStream API requests the server got. */
const requests: string[] = [];

function source(): string {
  return `import { sql } from "drizzle-orm";
import { defineFunction, z } from "jetfn";
export default defineFunction({
  input: z.object({ tag: z.string() }),
  async handler({ tag }, ctx) {
    await ctx.db.execute(sql\`insert into burst_runs (tag) values (\${tag})\`);
    return null;
  },
});
`;
}

function functionName(index: number): string {
  return `burst-${String(index).padStart(3, "0")}`;
}

/** `$JS.API.CONSUMER.INFO.<stream>.<consumer>` -> `CONSUMER.INFO`; `CONSUMER.MSG.NEXT` keeps its three tokens. */
function kindOf(subject: string): string {
  const tokens = subject.split(".");
  return tokens[3] === "MSG" ? tokens.slice(2, 5).join(".") : tokens.slice(2, 4).join(".");
}

/** Requests by kind. */
function countKinds(subjects: string[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const subject of subjects) counts[kindOf(subject)] = (counts[kindOf(subject)] ?? 0) + 1;
  return counts;
}

async function ranTags(): Promise<string[]> {
  const rows = await env.database.sql<{ tag: string }[]>`select tag from burst_runs order by tag`;
  return rows.map((row) => row.tag);
}

beforeAll(async () => {
  env = await createTestEnvironment();
  await env.database.sql`create table burst_runs (id serial primary key, tag text not null)`;
  dir = await mkdtemp(path.join(tmpdir(), "jetfn-reconnect-burst-"));
  for (let index = 0; index < FUNCTIONS; index++)
    await writeFile(path.join(dir, `${functionName(index)}.ts`), source());
  observer = await connect({ servers: env.nats.url });
  observer.subscribe("$JS.API.>", {
    callback: (_error, message) => {
      requests.push(message.subject);
    },
  });
  await observer.flush();
}, 60_000);

afterAll(async () => {
  await observer?.close();
  await env?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe("a reconnect of a runtime with many functions", () => {
  it("looks for waiting priority jobs with a few requests, and runs those published while it was away", async () => {
    const proxy = await startPartitionProxy(env.nats.port);
    const runtime = await env.startRuntime({ functionsDir: dir, natsUrl: proxy.url, healthCheckInterval: "1h" });
    expect(runtime.registry.size).toBe(FUNCTIONS);
    const client = await env.client();
    const before = Array.from({ length: RAN_BEFORE }, (_, index) => functionName(index * 5));
    for (const name of before) await client.enqueue(name, { tag: `before-${name}` }, { priority: 2 });
    await eventually(async () => (await ranTags()).length === RAN_BEFORE, 60_000);

    // Cut off: the runtime's connection closes and its reconnect waits until the proxy heals.
    const disconnected = new Promise((resolve) => runtime.events.once("nats:disconnected", resolve));
    proxy.cut();
    proxy.reset();
    await disconnected;
    for (const name of PUBLISHED_AWAY) await client.enqueue(name, { tag: `away-${name}` }, { priority: 3 });
    await observer.flush();
    requests.length = 0;
    const reconnected = new Promise((resolve) => runtime.events.once("nats:reconnected", resolve));
    proxy.heal();
    await reconnected;
    await eventually(async () => (await ranTags()).length === RAN_BEFORE + PUBLISHED_AWAY.length, 60_000);
    await runtime.nats.flush();
    await observer.flush();

    console.log("JetStream API requests after the reconnect:", countKinds(requests));
    // Pulls are issued again for every consumer: each lives on its own consumer, not in the API queue.
    const asked = requests.filter((subject) => !subject.startsWith("$JS.API.CONSUMER.MSG.NEXT."));
    const named = (subject: string) => /burst-[0-9]{3}/.exec(subject)?.[0];
    // Starting a level found waiting costs its own requests (its consumer's creation); any other
    // function costs none, and the look itself a few for all of them.
    expect(asked.filter((subject) => named(subject) && !PUBLISHED_AWAY.includes(named(subject) ?? ""))).toEqual([]);
    expect(asked.filter((subject) => !named(subject)).length).toBeLessThanOrEqual(3);
    expect(await ranTags()).toEqual(expect.arrayContaining(PUBLISHED_AWAY.map((name) => `away-${name}`)));
  }, 180_000);

  it("pulls again after the server restarts: jobs enqueued then run, priority ones too", async () => {
    const runtime = await env.startRuntime({ functionsDir: dir, healthCheckInterval: "1h" });
    const reconnected = new Promise((resolve) => runtime.events.once("nats:reconnected", resolve));
    await env.nats.restart();
    await reconnected;
    const client = await env.client();
    const ran = (await ranTags()).length;
    await client.enqueue("burst-011", { tag: "after-restart" });
    await client.enqueue("burst-012", { tag: "after-restart-p1" }, { priority: 1 });
    await eventually(async () => (await ranTags()).length === ran + 2, 60_000);
    expect(await ranTags()).toEqual(expect.arrayContaining(["after-restart", "after-restart-p1"]));
  }, 180_000);
});
