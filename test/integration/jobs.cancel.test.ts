import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { JetfnClient } from "../../runtime/sdk/client";
import { runCli } from "../helpers/cli";
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

async function ended(id: string, timeoutMs = 20_000) {
  return eventually(async () => {
    const view = await client.status(id);
    return ["succeeded", "dead", "cancelled"].includes(view.status) ? view : undefined;
  }, timeoutMs);
}

async function rowsNamed(name: string): Promise<unknown[]> {
  return (await env.database.sql`select 1 from items where name = ${name}`) as never;
}

describe("cancelling jobs, with two runtimes", () => {
  it("aborts a running job: ctx.signal fires with the reason, its writes roll back, it ends cancelled", async () => {
    const [first, second] = await Promise.all([env.startRuntime(), env.startRuntime()]);
    const job = await client.enqueue("write-then-wait", { name: "running", ms: 20_000 });
    await eventually(async () => (await client.status(job.id)).status === "running", 10_000);
    const started = Date.now();
    const waiting = client.result(job.id, { timeout: "15s" }).catch((error: unknown) => error);
    expect(await client.cancel(job.id, { reason: "customer asked" })).toMatchObject({ status: "cancelled" });
    const failure = (await waiting) as { code?: string; message?: string };
    expect(failure.code).toBe("E_CANCELLED");
    expect(Date.now() - started).toBeLessThan(5_000);
    const view = await ended(job.id);
    expect(view.status).toBe("cancelled");
    expect((view.error as { message: string }).message).toMatch(/customer asked/);
    const aborted = [...first.logs.lines, ...second.logs.lines].filter((line) => line.msg === "aborted");
    expect(aborted.map((line) => line.reason)).toEqual([expect.stringMatching(/customer asked/)]);
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(await rowsNamed("running")).toEqual([]);
  });

  it("never runs a queued job that is cancelled before it starts", async () => {
    await Promise.all([env.startRuntime(), env.startRuntime()]);
    // Concurrency 1 per runtime: two long jobs hold both runtimes, the third waits in the queue.
    const busy = await Promise.all([
      client.enqueue("write-then-wait", { name: "busy-1", ms: 3_000 }),
      client.enqueue("write-then-wait", { name: "busy-2", ms: 3_000 }),
    ]);
    for (const job of busy) await eventually(async () => (await client.status(job.id)).status === "running");
    const queued = await client.enqueue("write-then-wait", { name: "queued", ms: 0 });
    await client.cancel(queued.id);
    for (const job of busy) expect((await ended(job.id)).status).toBe("succeeded");
    expect((await ended(queued.id)).status).toBe("cancelled");
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(await rowsNamed("queued")).toEqual([]);
  });

  it("cancels a delayed job, which then never runs", async () => {
    await Promise.all([env.startRuntime(), env.startRuntime()]);
    const job = await client.enqueue("insert-item", { name: "delayed-cancelled" }, { delay: "2s" });
    expect((await client.status(job.id)).status).toBe("scheduled");
    await client.cancel(job.id, { reason: "not needed" });
    expect((await client.status(job.id)).status).toBe("cancelled");
    await new Promise((resolve) => setTimeout(resolve, 3_500));
    expect(await rowsNamed("delayed-cancelled")).toEqual([]);
    expect((await client.status(job.id)).status).toBe("cancelled");
  });

  it("refuses to cancel a job that already ended, with E_NOT_CANCELLABLE", async () => {
    await env.startRuntime();
    const job = await client.enqueue("insert-item", { name: "done" });
    expect((await ended(job.id)).status).toBe("succeeded");
    await expect(client.cancel(job.id)).rejects.toMatchObject({ code: "E_NOT_CANCELLABLE" });
    expect((await client.status(job.id)).status).toBe("succeeded");
  });

  it("keeps a cancel across restarts: a cancelled delayed job stays cancelled when runtimes restart past its time", async () => {
    const job = await client.enqueue("insert-item", { name: "cancelled-while-down" }, { delay: "3s" });
    const answering = await env.startRuntime();
    await client.cancel(job.id);
    await answering.stop();
    await new Promise((resolve) => setTimeout(resolve, 3_500));
    await env.startRuntime();
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    expect(await rowsNamed("cancelled-while-down")).toEqual([]);
    expect((await client.status(job.id)).status).toBe("cancelled");
  });

  // Five CLI processes, each a Node start: past the default 30 s at load 27.
  it("works from the CLI: jetfn enqueue --delay / --at, jetfn status shows scheduled, jetfn cancel", async () => {
    await env.startRuntime();
    const cliEnv = { NATS_URL: env.nats.url };
    const delayed = await runCli(["enqueue", "insert-item", '{"name": "cli-delayed"}', "--delay", "1h"], cliEnv);
    expect(delayed.code).toBe(0);
    const id = delayed.stdout.trim();
    const status = await runCli(["status", id], cliEnv);
    expect(status.stdout).toMatch(/scheduled {2}insert-item/);
    expect(status.stdout).toMatch(/runs at: \d{4}-/);
    const at = new Date(Date.now() + 3_600_000).toISOString();
    const timed = await runCli(["enqueue", "insert-item", '{"name": "cli-at"}', "--at", at, "--json"], cliEnv);
    expect(timed.code).toBe(0);
    const timedView = await client.status((JSON.parse(timed.stdout) as { id: string }).id);
    expect(timedView).toMatchObject({ status: "scheduled", runAt: at });
    const cancelled = await runCli(["cancel", id, "--reason", "from the shell"], cliEnv);
    expect(cancelled).toMatchObject({ code: 0 });
    expect(cancelled.stdout).toMatch(/cancelled/);
    expect((await client.status(id)).status).toBe("cancelled");
    const again = await runCli(["cancel", "no-such-job-but-valid"], cliEnv);
    expect(again.code).toBe(0);
  }, 90_000);
});
