import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { jetstream } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { drizzle } from "drizzle-orm/postgres-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { emitInTransaction, enqueueInTransaction, readOutboxLag } from "../../runtime/db/outbox";
import { jobMessage, publishMessage } from "../../runtime/outbox/outbox-message";
import type { Runtime } from "../../runtime/runtime";
import type { JetfnClient } from "../../runtime/sdk/client";
import { createTestEnvironment, eventually, type TestEnvironment } from "../helpers/environment";

let env: TestEnvironment;
let client: JetfnClient;
let dir: string;
let first: Runtime | undefined;

const CRASH_RUNTIME = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../helpers/crash-after-commit.ts");

/** Enqueues `count` sink jobs and emits one event; writes a row first unless `touchDb` is false. */
const PRODUCER = `import { defineFunction, NonRetryableError, z } from "jetfn";
export default defineFunction({
  input: z.object({ name: z.string(), count: z.number().default(3), touchDb: z.boolean().default(true), fail: z.boolean().default(false) }),
  retry: { attempts: 1 },
  async handler({ name, count, touchDb, fail }, ctx) {
    if (touchDb) await ctx.db.execute(\`insert into produced (name) values ('\${name}')\`);
    for (let i = 0; i < count; i++) await ctx.enqueue("sink", { name, i });
    await ctx.emit("sink.happened", { name, i: -1 });
    await ctx.call("sink", { name, i: count });
    if (fail) throw new NonRetryableError("failing after enqueue: nothing may be published");
    return { name };
  },
});
`;

const SINK = `import { defineFunction, z } from "jetfn";
export default defineFunction({
  input: z.object({ name: z.string(), i: z.number() }),
  async handler({ name, i }, ctx) {
    await ctx.db.execute(\`insert into sunk (name, i, fn, invocation) values ('\${name}', \${i}, '\${ctx.functionName}', '\${ctx.invocationId}')\`);
    return { i };
  },
});
`;

const LISTENER = SINK.replace(
  "export default defineFunction({",
  'export default defineFunction({\n  on: "sink.happened",',
);

beforeAll(async () => {
  env = await createTestEnvironment();
  await env.database.sql`create table produced (id serial primary key, name text not null)`;
  await env.database.sql`create table sunk (id serial primary key, name text, i int, fn text, invocation text)`;
  dir = await mkdtemp(path.join(tmpdir(), "jetfn-outbox-"));
  await writeFile(path.join(dir, "producer.ts"), PRODUCER);
  await writeFile(path.join(dir, "sink.ts"), SINK);
  await writeFile(path.join(dir, "sink-listener.ts"), LISTENER);
  client = await env.client();
});

afterAll(async () => {
  await env?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function sunk(name: string): Promise<{ i: number; fn: string; invocation: string }[]> {
  return (await env.database.sql`select i, fn, invocation from sunk where name = ${name} order by fn, i`) as never;
}

/** Waits until `name`'s jobs and event were all handled (count jobs + the call + the event). */
function allSunk(name: string, count = 3) {
  return eventually(async () => {
    const rows = await sunk(name);
    return rows.length >= count + 2 ? rows : undefined;
  }, 15_000);
}

async function outboxRows(): Promise<number> {
  return (await readOutboxLag(env.database.sql)).count;
}

function expectOnce(rows: { i: number; fn: string }[], count = 3): void {
  const expected = [
    ...Array.from({ length: count + 1 }, (_, i) => ({ fn: "sink", i })),
    { fn: "sink-listener", i: -1 },
  ];
  expect(rows.map(({ fn, i }) => ({ fn, i }))).toEqual(expected);
}

describe("the transactional outbox", () => {
  it("publishes a committed invocation's jobs and events once, in order, right after commit", async () => {
    // The tests after this one use it too, up to the crash.
    const runtime = await env.startRuntime({ functionsDir: dir }, { laterTestsUseIt: true });
    first = runtime;
    const published: number[] = [];
    runtime.events.on("outbox:published", (event) => {
      if (!event.swept) published.push(event.durationMs);
    });
    const job = await client.enqueue("producer", { name: "committed", count: 5 });
    expectOnce(await allSunk("committed", 5), 5);
    // In order: the sink jobs were stored in the order they were enqueued.
    const order = await env.database.sql`
      select s.i from sunk s join jetfn.invocations i on i.id = s.invocation
      where s.name = 'committed' and s.fn = 'sink' order by i.stream_seq`;
    expect(order.map((row) => row.i)).toEqual([0, 1, 2, 3, 4, 5]);
    expect((await client.status(job.id)).status).toBe("succeeded");
    await eventually(async () => (await outboxRows()) === 0);
    expect(published.length).toBeGreaterThan(0);
    for (let run = 0; run < 20; run++) await client.enqueueAndWait("producer", { name: `warm-${run}`, count: 1 });
    const sorted = published.slice(1).sort((a, b) => a - b);
    console.info(
      `outbox publish after commit (3 messages): median ${sorted[Math.floor(sorted.length / 2)]?.toFixed(2)} ms, max ${sorted.at(-1)?.toFixed(2)} ms`,
    );

    // A handler that never touched ctx.db: the rows are written with its record, still published once.
    await client.enqueue("producer", { name: "no-db", touchDb: false });
    expectOnce(await allSunk("no-db"));

    // Request-reply: the same, after the reply.
    await client.call("producer", { name: "called" });
    expectOnce(await allSunk("called"));
  });

  it("publishes nothing when the invocation rolls back", async () => {
    const job = await client.enqueue("producer", { name: "rolled-back", fail: true });
    await eventually(async () => (await client.status(job.id)).status === "dead");
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    expect(await sunk("rolled-back")).toEqual([]);
    expect(await outboxRows()).toBe(0);
    expect(await env.database.sql`select 1 from produced where name = 'rolled-back'`).toHaveLength(0);
  });

  it("publishes from a web app's own transaction (enqueueInTransaction / emitInTransaction) after commit only", async () => {
    const db = drizzle(env.database.sql);
    const started = performance.now();
    await db.transaction(async (tx) => {
      for (let i = 0; i < 4; i++) await enqueueInTransaction(tx, "sink", { name: "web-app", i });
      await emitInTransaction(tx, "sink.happened", { name: "web-app", i: -1 });
    });
    expectOnce(await allSunk("web-app"));
    console.info(`web app commit -> all five handled: ${(performance.now() - started).toFixed(0)} ms`);
    await db
      .transaction(async (tx) => {
        await enqueueInTransaction(tx, "sink", { name: "web-app-rollback", i: 0 });
        throw new Error("rollback");
      })
      .catch(() => undefined);
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    expect(await sunk("web-app-rollback")).toEqual([]);
    await expect(db.transaction((tx) => emitInTransaction(tx, "Not Valid", {}))).rejects.toMatchObject({
      code: "E_INPUT_INVALID",
    });
  });

  it("survives a crash between commit and publish: a fresh runtime publishes the leftovers exactly once", async () => {
    // Only the crashing runtime may take the producer's job.
    await first?.stop();
    const child: ChildProcess = spawn(process.execPath, ["--import", "tsx", CRASH_RUNTIME], {
      env: {
        ...process.env,
        NATS_URL: env.nats.url,
        DATABASE_URL: env.database.url,
        JETFN_FUNCTIONS: dir,
        CRASH_AFTER_COMMIT_OF: "producer",
      },
      stdio: ["ignore", "pipe", "inherit"],
    });
    const exited = once(child, "exit");
    try {
      await eventually(() => child.stdout?.read()?.toString().includes("ready"), 20_000);
      await client.enqueue("producer", { name: "crashed" });
      const [, signal] = await Promise.race([
        exited,
        new Promise<never>((_, reject) => setTimeout(() => reject(new Error("no crash")), 15_000)),
      ]);
      expect(signal).toBe("SIGKILL");
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    }
    // Committed (the producer's row is there) but not published: all five messages wait in the outbox.
    expect(await env.database.sql`select 1 from produced where name = 'crashed'`).toHaveLength(1);
    expect(await outboxRows()).toBe(5);
    expect(await sunk("crashed")).toEqual([]);
    const lag = await readOutboxLag(env.database.sql);
    expect(lag.oldestAgeMs).toBeGreaterThanOrEqual(0);

    const fresh = await env.startRuntime({ functionsDir: dir, maxAckWait: "2s" }, { laterTestsUseIt: true });
    expect((await fresh.outboxLag()).count).toBe(5);
    expectOnce(await allSunk("crashed"));
    await eventually(async () => (await outboxRows()) === 0);
    // The job redelivered from the crashed runtime is recognised as done, not run again.
    await new Promise((resolve) => setTimeout(resolve, 3_000));
    expectOnce(await sunk("crashed"));
    expect(await env.database.sql`select 1 from produced where name = 'crashed'`).toHaveLength(1);
  });

  it("drops a message published before a crash kept its row (same Nats-Msg-Id)", async () => {
    const nc = await connect({ servers: env.nats.url });
    try {
      const message = jobMessage("sink", { name: "published-twice", i: 0 });
      await publishMessage(jetstream(nc), message);
      await env.database.sql`
        insert into jetfn.outbox (id, subject, headers, body)
        values (${message.id}, ${message.subject}, ${JSON.stringify(message.headers)}::jsonb, ${message.body})`;
      await eventually(async () => (await outboxRows()) === 0);
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      expect((await sunk("published-twice")).map((row) => row.i)).toEqual([0]);
    } finally {
      await nc.close();
    }
  });

  it("relays a large backlog written outside functions", async () => {
    const db = drizzle(env.database.sql);
    const total = 5_000;
    await db.transaction(async (tx) => {
      for (let i = 0; i < total; i++) await emitInTransaction(tx, "nobody.listens", { i });
    });
    const started = performance.now();
    await eventually(async () => (await outboxRows()) === 0, 60_000);
    const seconds = (performance.now() - started) / 1_000;
    console.info(`relay: ${total} rows in ${seconds.toFixed(2)} s = ${Math.round(total / seconds)} rows/s`);
    const nc = await connect({ servers: env.nats.url });
    try {
      const manager = await (await import("@nats-io/jetstream")).jetstreamManager(nc);
      const info = await manager.streams.info("JETFN_EVENTS", { subjects_filter: "fn.event.nobody.listens" });
      expect(info.state.subjects?.["fn.event.nobody.listens"]).toBe(total);
    } finally {
      await nc.close();
    }
  }, 120_000);
});
