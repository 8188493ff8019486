import { jetstreamManager } from "@nats-io/jetstream";
import { describe, expect, it } from "vitest";
import { DEFAULT_STREAM_NAME } from "../../runtime/config";
import type { DatabaseClient } from "../../runtime/db/client";
import { type DebounceDependencies, takeDebounceKey } from "../../runtime/flow/debounce";
import { debounceDependencies } from "../../runtime/flow/enqueue-api";
import { DEBOUNCE_KEY_HEADER, openJobKeys } from "../../runtime/flow/job-keys";
import { ensureDelayedJobs } from "../../runtime/nats/delayed-jobs";
import { publishJob } from "../../runtime/nats/publish-job";
import { StreamPublisher } from "../../runtime/nats/stream-publisher";
import { runCli } from "../helpers/cli";
import { useItemsEnvironment } from "../helpers/items-environment";
import { captureLogs } from "../helpers/logs";

const items = useItemsEnvironment();

describe("debounce, with two runtimes", () => {
  it("runs only the last job of a burst with one key; the earlier ones end superseded, visibly", async () => {
    const { env, client, ended, namesLike } = items();
    await Promise.all([env.startRuntime(), env.startRuntime()]);
    const jobs = [];
    for (let n = 0; n < 5; n++) {
      jobs.push(
        await client.enqueue("insert-item", { name: `burst-${n}` }, { debounce: { key: "user:1", period: "1s" } }),
      );
    }
    const last = jobs[4]?.id as string;
    for (const [n, job] of jobs.slice(0, 4).entries()) {
      const view = await client.status(job.id);
      expect(view.status).toBe("superseded");
      // Each names the job that replaced it: the next one.
      const next = jobs[n + 1]?.id as string;
      expect(view.error).toMatchObject({ code: "E_SUPERSEDED", message: expect.stringContaining(next) });
    }
    expect((await client.status(last)).status).toBe("scheduled");
    const failure = await client.result(jobs[0]?.id as string).catch((error: unknown) => error);
    expect(failure).toMatchObject({ code: "E_SUPERSEDED" });
    expect((await ended(last)).status).toBe("succeeded");
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(await namesLike("burst-")).toEqual(["burst-4"]);
  });

  it("keeps keys apart, and runs a job enqueued after the previous one's period again", async () => {
    const { env, client, ended, namesLike } = items();
    await Promise.all([env.startRuntime(), env.startRuntime()]);
    const a = await client.enqueue("insert-item", { name: "apart-a" }, { debounce: { key: "a", period: "300ms" } });
    const b = await client.enqueue("insert-item", { name: "apart-b" }, { debounce: { key: "b", period: "300ms" } });
    expect((await ended(a.id)).status).toBe("succeeded");
    expect((await ended(b.id)).status).toBe("succeeded");
    const again = await client.enqueue(
      "insert-item",
      { name: "apart-a2" },
      { debounce: { key: "a", period: "300ms" } },
    );
    expect((await ended(again.id)).status).toBe("succeeded");
    expect((await client.status(a.id)).status).toBe("succeeded");
    expect((await namesLike("apart-")).sort()).toEqual(["apart-a", "apart-a2", "apart-b"]);
  });

  it("survives a restart of every runtime while the jobs wait", async () => {
    const { env, client, ended, namesLike } = items();
    const runtimes = await Promise.all([env.startRuntime(), env.startRuntime()]);
    const jobs = [];
    for (let n = 0; n < 3; n++) {
      jobs.push(
        await client.enqueue("insert-item", { name: `restart-${n}` }, { debounce: { key: "r", period: "2s" } }),
      );
    }
    await Promise.all(runtimes.map((runtime) => runtime.stop()));
    await env.startRuntime();
    expect((await ended(jobs[2]?.id as string)).status).toBe("succeeded");
    for (const job of jobs.slice(0, 2)) expect((await client.status(job.id)).status).toBe("superseded");
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(await namesLike("restart-")).toEqual(["restart-2"]);
  });

  it("never runs a superseded job whose delayed message was left behind, after its burst was released", async () => {
    const { env, client, ended, namesLike } = items();
    // Enqueues as the enqueue API does, by a runtime that stops before it removes a superseded job's
    // delayed message; no runtime moves jobs meanwhile.
    const nc = client.connection;
    const manager = await jetstreamManager(nc);
    const deps: DebounceDependencies = {
      ...debounceDependencies({
        keys: await openJobKeys(nc),
        database: { sql: env.database.sql } as DatabaseClient,
        nc,
        manager,
        delayedStream: await ensureDelayedJobs(manager, DEFAULT_STREAM_NAME),
        logger: captureLogs().logger,
      }),
      removeDelayed: () => Promise.reject(new Error("the runtime stopped before removing it")),
    };
    const publisher = new StreamPublisher(nc);
    const enqueue = async (name: string) => {
      const enqueuedAt = Date.now();
      const due = enqueuedAt + 1_000;
      const headers = { [DEBOUNCE_KEY_HEADER]: "left" };
      const job = await publishJob(publisher, "insert-item", { name }, { notBefore: due, headers });
      await takeDebounceKey(deps, { id: job.id, fn: "insert-item", key: "left", seq: job.seq, enqueuedAt, due });
      return job.id;
    };
    const first = await enqueue("left-0");
    const second = await enqueue("left-1");
    // The second job is due when the third comes: the third releases it, and every job before it.
    await new Promise((resolve) => setTimeout(resolve, 1_200));
    const third = await enqueue("left-2");
    const runtime = await env.startRuntime();
    expect((await ended(second)).status).toBe("succeeded");
    expect((await ended(third)).status).toBe("succeeded");
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect((await client.status(first)).status).toBe("superseded");
    expect(await namesLike("left-")).toEqual(["left-1", "left-2"]);
    // Its handler never ran (an attempt's own lines carry its number).
    expect(runtime.logs.lines.filter((line) => line.invocationId === first && line.attempt !== undefined)).toEqual([]);
  });

  // Two CLI processes must both enqueue within the period: 6 s was too short once at load 25.
  it("debounces from the CLI, and status shows the superseded job", async () => {
    const { env, ended } = items();
    await env.startRuntime();
    const cli = (name: string) =>
      runCli(["enqueue", "insert-item", JSON.stringify({ name }), "--debounce", "cli", "--debounce-period", "15s"], {
        NATS_URL: env.nats.url,
      });
    const first = await cli("cli-0");
    const second = await cli("cli-1");
    expect([first.code, second.code]).toEqual([0, 0]);
    const status = await runCli(["status", first.stdout.trim()], { NATS_URL: env.nats.url });
    expect(status.stdout).toMatch(/superseded/);
    expect(status.stdout).toContain(second.stdout.trim());
    expect((await ended(second.stdout.trim(), 45_000)).status).toBe("succeeded");
    const missing = await runCli(["enqueue", "insert-item", "{}", "--debounce", "cli"], { NATS_URL: env.nats.url });
    expect(missing.code).not.toBe(0);
    expect(missing.stderr).toMatch(/--debounce-period/);
  }, 90_000);
});
