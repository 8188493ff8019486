import { drizzle } from "drizzle-orm/postgres-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { enqueueInTransaction } from "../../runtime/db/outbox";
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

async function finished(id: string, timeoutMs = 20_000) {
  return eventually(async () => {
    const view = await client.status(id);
    return ["succeeded", "dead"].includes(view.status) ? view : undefined;
  }, timeoutMs);
}

async function rowsNamed(name: string): Promise<{ attempt: number; invocation: string }[]> {
  return (await env.database.sql`select attempt, invocation from items where name = ${name} order by id`) as never;
}

describe("delayed jobs", () => {
  it("shows a delayed job as scheduled with its due time, and runs it at that time, once, with two runtimes", async () => {
    await Promise.all([env.startRuntime(), env.startRuntime()]);
    const job = await client.enqueue("insert-item", { name: "later" }, { delay: "2s" });
    const view = await client.status(job.id);
    expect(view.status).toBe("scheduled");
    expect(view.function).toBe("insert-item");
    const runAt = Date.parse(view.runAt as string);
    expect(Math.abs(runAt - (Date.now() + 2_000))).toBeLessThan(1_000);
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    expect(await rowsNamed("later")).toEqual([]);
    const done = await finished(job.id);
    expect(done).toMatchObject({ status: "succeeded", attempts: 1 });
    const lateMs = Date.parse(done.startedAt as string) - runAt;
    expect(lateMs).toBeGreaterThanOrEqual(0);
    // Within a second of its time; generous under a loaded machine.
    expect(lateMs).toBeLessThan(2_000);
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(await rowsNamed("later")).toHaveLength(1);
  });

  it("runs a job at a given time (runAt), and one whose time has passed at once", async () => {
    await env.startRuntime();
    const at = new Date(Date.now() + 1_500);
    const job = await client.enqueue("insert-item", { name: "at-time" }, { runAt: at });
    expect((await client.status(job.id)).status).toBe("scheduled");
    const done = await finished(job.id);
    expect(Date.parse(done.startedAt as string)).toBeGreaterThanOrEqual(at.getTime());
    const past = await client.enqueue("insert-item", { name: "past" }, { runAt: new Date(Date.now() - 60_000) });
    expect((await finished(past.id, 10_000)).status).toBe("succeeded");
    await expect(client.enqueue("insert-item", { name: "x" }, { delay: "soon" })).rejects.toMatchObject({
      code: "E_INPUT_INVALID",
    });
  });

  it("gives a delayed job every one of its attempts", async () => {
    await env.startRuntime();
    // flaky has 4 attempts: failing 3 times, it succeeds on the 4th, as without a delay.
    const job = await client.enqueue("flaky", { name: "delayed-flaky", failTimes: 3 }, { delay: "1s" });
    const done = await finished(job.id, 30_000);
    expect(done).toMatchObject({ status: "succeeded", attempts: 4, result: { succeededOnAttempt: 4 } });
  });

  it("survives the restart of every runtime while it waits", async () => {
    const first = await env.startRuntime();
    const second = await env.startRuntime();
    const job = await client.enqueue("insert-item", { name: "after-restart" }, { delay: "3s" });
    await eventually(async () => (await client.status(job.id)).status === "scheduled");
    await Promise.all([first.stop(), second.stop()]);
    await new Promise((resolve) => setTimeout(resolve, 4_000));
    expect(await rowsNamed("after-restart")).toEqual([]);
    await env.startRuntime();
    expect((await finished(job.id)).status).toBe("succeeded");
    expect(await rowsNamed("after-restart")).toHaveLength(1);
  });

  it("goes through the outbox from ctx.enqueue and enqueueInTransaction", async () => {
    await env.startRuntime();
    const parent = await client.enqueue("enqueue-later", { name: "from-handler", delay: "2s" });
    const { later } = (await finished(parent.id)).result as { later: string };
    const waiting = await eventually(async () => {
      const view = await client.status(later);
      return view.status === "scheduled" ? view : undefined;
    });
    expect(waiting.function).toBe("insert-item");
    expect((await finished(later)).status).toBe("succeeded");

    const { id } = await drizzle(env.database.sql).transaction((tx) =>
      enqueueInTransaction(tx, "insert-item", { name: "from-app" }, { delay: "1s" }),
    );
    expect((await finished(id)).status).toBe("succeeded");
  });

  it("keeps running immediate jobs promptly while 1,000 delayed jobs of the same function wait", async () => {
    const runtime = await env.startRuntime();
    await Promise.all(
      Array.from({ length: 1_000 }, (_, index) =>
        client.enqueue("insert-item", { name: `waiting-${index}` }, { delay: "1h" }),
      ),
    );
    const started = Date.now();
    const now = await client.enqueue("insert-item", { name: "right-away" });
    expect((await finished(now.id, 10_000)).status).toBe("succeeded");
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(runtime.logs.lines.filter((line) => (line.level as number) >= 50)).toEqual([]);
  });
});
