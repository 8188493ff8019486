import { mkdtemp, rm, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { listQueueDepths } from "../../runtime/nats/queue-depth";
import { createTestEnvironment, eventually, type TestEnvironment } from "../helpers/environment";

// A function's priority consumers are created when its first job of that level exists, not at deploy:
// on a cluster each consumer is a Raft group of its own.

const STREAM = "JETFN_JOBS";
let env: TestEnvironment;
let dir: string;

/** `lazy` in a version: records each input it ran; its retry policy decides its consumers' max deliveries. */
function lazySource(attempts: number): string {
  return `import { sql } from "drizzle-orm";
import { defineFunction, z } from "jetfn";
export default defineFunction({
  input: z.object({ name: z.string() }),
  retry: { attempts: ${attempts}, backoff: "100ms" },
  async handler({ name }, ctx) {
    await ctx.db.execute(sql\`insert into lazy_runs (name) values (\${name})\`);
    return null;
  },
});
`;
}

async function writeVersion(attempts: number, writtenAt: Date): Promise<void> {
  const file = path.join(dir, "lazy.ts");
  await writeFile(file, lazySource(attempts));
  await utimes(file, writtenAt, writtenAt);
}

beforeAll(async () => {
  env = await createTestEnvironment();
  await env.database.sql`create table lazy_runs (id serial primary key, name text not null)`;
  dir = await mkdtemp(path.join(tmpdir(), "jetfn-priority-lazy-"));
  await writeVersion(2, new Date(Date.now() - 60_000));
});

afterAll(async () => {
  await env?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function manager() {
  return jetstreamManager((await env.client()).connection);
}

/** The names of `lazy`'s consumers on the jobs stream. */
async function lazyConsumers(): Promise<string[]> {
  const names: string[] = [];
  for await (const info of (await manager()).consumers.list(STREAM)) {
    if (info.name === "lazy" || info.name.startsWith("lazy:")) names.push(info.name);
  }
  return names.sort();
}

/** Publishes a job the way any NATS client can: JSON to the subject, no jetfn code, no headers. */
async function publishRaw(subject: string, name: string): Promise<void> {
  const client = await env.client();
  await jetstream(client.connection).publish(subject, JSON.stringify({ name }));
}

async function ran(name: string): Promise<boolean> {
  const rows = await env.database.sql`select 1 from lazy_runs where name = ${name}`;
  return rows.length > 0;
}

describe("priority consumers created when a level's first job exists", () => {
  it("deploys a function with its one consumer, and runs a priority job published by a plain NATS client", async () => {
    const runtime = await env.startRuntime({ functionsDir: dir });
    expect(runtime.registry.names()).toEqual(["lazy"]);
    expect(await lazyConsumers()).toEqual(["lazy"]);
    await publishRaw("fn.job.lazy.P2", "raw-p2");
    await eventually(() => ran("raw-p2"), 20_000);
    expect(await lazyConsumers()).toEqual(["lazy", "lazy:P2"]);
  });

  it("runs a priority job stored while no runtime ran, and counts it in the queue depth meanwhile", async () => {
    await publishRaw("fn.job.lazy.P3", "stored-p3");
    const depth = (await listQueueDepths(await manager(), STREAM)).get("lazy");
    expect(depth).toMatchObject({ pending: 1, priorityPending: 1 });
    expect(await lazyConsumers()).toEqual(["lazy", "lazy:P2"]);
    await env.startRuntime({ functionsDir: dir });
    await eventually(() => ran("stored-p3"), 20_000);
    expect(await lazyConsumers()).toEqual(["lazy", "lazy:P2", "lazy:P3"]);
  });

  it("recreates a level consumer deleted while the runtime pulls from it, and runs the level's next job", async () => {
    // The stall watch looks after functions' own consumers only; a level's puller finds its loss itself.
    await env.startRuntime({ functionsDir: dir });
    await publishRaw("fn.job.lazy.P2", "before-delete");
    await eventually(() => ran("before-delete"), 20_000);
    await (await manager()).consumers.delete(STREAM, "lazy:P2");
    await publishRaw("fn.job.lazy.P2", "after-delete");
    await eventually(() => ran("after-delete"), 20_000);
    expect(await lazyConsumers()).toContain("lazy:P2");
  });

  it("gives a redeploy's new retry policy to the level consumers that exist, and creates no others", async () => {
    const runtime = await env.startRuntime({ functionsDir: dir, watch: true });
    const maxDeliver = async (name: string) =>
      (await (await manager()).consumers.info(STREAM, name)).config.max_deliver;
    expect(await maxDeliver("lazy:P2")).toBe(3);
    await writeVersion(4, new Date());
    await eventually(async () => (await maxDeliver("lazy:P2")) === 5 && (await maxDeliver("lazy:P3")) === 5, 20_000);
    expect(await maxDeliver("lazy")).toBe(5);
    expect(await lazyConsumers()).toEqual(["lazy", "lazy:P2", "lazy:P3"]);
    // A level created after the redeploy starts with the settings in force.
    await publishRaw("fn.job.lazy.P1", "after-redeploy");
    await eventually(() => ran("after-redeploy"), 20_000);
    expect(await maxDeliver("lazy:P1")).toBe(5);
    expect(runtime.registry.names()).toEqual(["lazy"]);
  });
});
