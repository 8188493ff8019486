import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { describe, expect, it } from "vitest";
import { FLOW_BUCKET } from "../../runtime/flow/slot-board";
import { eventually } from "../helpers/environment";
import { finishedRuns } from "../helpers/flow-runs";
import { useFunctionsDirEnvironment } from "../helpers/functions-dir-environment";

/**
 * Flow control when limits go away or NATS does not answer: parked jobs are woken once their
 * function lost its limit (redeployed, or restarted, without it), a key function that throws
 * fails the attempt and keeps no lease, and flow control that could not open is opened again.
 */

const scene = useFunctionsDirEnvironment("jetfn-flow-recovery-");

/** A function reporting when it ran, with the given limit options (source text). */
function source(limits: string): string {
  return `import { defineFunction, z } from "jetfn";
export default defineFunction({
  input: z.object({ n: z.number(), account: z.string().optional(), bad: z.boolean().optional() }),
  ${limits}
  retry: { attempts: 2, backoff: "100ms" },
  async handler({ n }, ctx) {
    return { n, attempt: ctx.attempt, start: Date.now() };
  },
});
`;
}

/** Holds every slot of a group, as a runtime would, until far in the future. */
async function holdSlots(group: string, count: number): Promise<void> {
  const { client } = scene();
  const bucket = await new Kvm(client.connection).open(FLOW_BUCKET);
  const until = Date.now() + 3_600_000;
  for (let slot = 0; slot < count; slot++) await bucket.put(`${group}.${slot}`, JSON.stringify({ until }));
}

async function enqueueWaiting(fn: string, count: number): Promise<string[]> {
  const { client } = scene();
  const ids: string[] = [];
  for (let n = 0; n < count; n++) ids.push((await client.enqueue(fn as never, { n } as never)).id);
  await eventually(async () => {
    const views = await Promise.all(ids.map((id) => client.status(id)));
    return views.every((view) => view.status === "waiting");
  }, 20_000);
  return ids;
}

describe("parked jobs of a function that lost its limit", () => {
  it("run once the function is redeployed without its concurrency limit, on two runtimes", async () => {
    const { env, dir } = scene();
    await writeFile(path.join(dir, "unlimited-later.ts"), source("concurrencyLimit: { limit: 1 },"));
    const runtimes = await Promise.all([
      env.startRuntime({ functionsDir: dir, watch: true }),
      env.startRuntime({ functionsDir: dir, watch: true }),
    ]);
    await holdSlots("c._.unlimited-later", 1);
    await enqueueWaiting("unlimited-later", 5);
    await writeFile(path.join(dir, "unlimited-later.ts"), source(""));
    await eventually(() => runtimes.every((runtime) => !runtime.registry.get("unlimited-later")?.flow));
    const runs = await finishedRuns(env, "unlimited-later", 5, 30_000);
    expect(runs.map((run) => run.status)).toEqual(Array(5).fill("succeeded"));
    // Waiting was no attempt, before or after the limit went.
    expect(runs.map((run) => run.attempts)).toEqual(Array(5).fill(1));
  });

  it("run once the rate limit is removed while the concurrency limit stays", async () => {
    const { env, dir } = scene();
    await writeFile(
      path.join(dir, "rate-dropped.ts"),
      source('concurrencyLimit: { limit: 5 }, rateLimit: { limit: 1, period: "1d" },'),
    );
    await env.startRuntime({ functionsDir: dir, watch: true });
    await holdSlots("r._.rate-dropped", 1);
    await enqueueWaiting("rate-dropped", 3);
    await writeFile(path.join(dir, "rate-dropped.ts"), source("concurrencyLimit: { limit: 5 },"));
    const runs = await finishedRuns(env, "rate-dropped", 3, 30_000);
    expect(runs.map((run) => run.status)).toEqual(Array(3).fill("succeeded"));
    expect(runs.map((run) => run.attempts)).toEqual(Array(3).fill(1));
  });

  it("run after a restart where no deployed function has a limit", async () => {
    const { env } = scene();
    const own = await mkdtemp(path.join(tmpdir(), "jetfn-flow-restart-"));
    try {
      await writeFile(path.join(own, "restarted-unlimited.ts"), source("concurrencyLimit: { limit: 1 },"));
      const first = await env.startRuntime({ functionsDir: own });
      await holdSlots("c._.restarted-unlimited", 1);
      await enqueueWaiting("restarted-unlimited", 4);
      await first.stop();
      await writeFile(path.join(own, "restarted-unlimited.ts"), source(""));
      await env.startRuntime({ functionsDir: own });
      const runs = await finishedRuns(env, "restarted-unlimited", 4, 30_000);
      expect(runs.map((run) => run.status)).toEqual(Array(4).fill("succeeded"));
      expect(runs.map((run) => run.attempts)).toEqual(Array(4).fill(1));
    } finally {
      await rm(own, { recursive: true, force: true });
    }
  });
});

describe("a key function that throws", () => {
  it("fails the attempt with E_FLOW_KEY_INVALID, retried by policy, and frees the lease taken before it", async () => {
    const { env, client, dir } = scene();
    await writeFile(
      path.join(dir, "key-throws.ts"),
      source(`concurrencyLimit: { limit: 1 },
  rateLimit: {
    limit: 100,
    period: "1s",
    key: (input) => {
      if (input.bad) throw new Error("no account for this job");
      return input.account ?? "none";
    },
  },`),
    );
    await env.startRuntime({ functionsDir: dir, watch: true });
    const { id } = await client.enqueue("key-throws" as never, { n: 1, bad: true } as never);
    const view = await eventually(async () => {
      const status = await client.status(id);
      return status.status === "dead" ? status : undefined;
    }, 30_000);
    expect(view.attempts).toBe(2);
    expect(view.error).toMatchObject({
      code: "E_FLOW_KEY_INVALID",
      message: "rateLimit.key threw on this job's input: no account for this job",
    });
    // The concurrency lease it took before its rate key threw was freed, not left to run out (15 s).
    const bucket = await new Kvm(client.connection).open(FLOW_BUCKET);
    const slot = await bucket.get("c._.key-throws.0");
    expect(slot?.json<{ until: number }>().until ?? 0).toBeLessThan(Date.now());
    const good = await client.enqueue("key-throws" as never, { n: 2, account: "acme" } as never);
    await expect(client.result(good.id, { timeout: "10s" })).resolves.toMatchObject({ n: 2, attempt: 1 });
  });
});

describe("flow control that cannot open", () => {
  it("holds a limited job without spending an attempt, and opens once NATS lets it", async () => {
    const { env, client } = scene();
    const own = await mkdtemp(path.join(tmpdir(), "jetfn-flow-blocked-"));
    const manager = await jetstreamManager(client.connection);
    // Another stream on the waiting stream's subjects: creating JETFN_JOBS_WAITING fails until it goes.
    await manager.streams.delete("JETFN_JOBS_WAITING").catch(() => false);
    await manager.streams.add({ name: "BLOCKS_WAITING", subjects: ["jetfn.waiting.>"] });
    try {
      await writeFile(path.join(own, "opened-late.ts"), source("concurrencyLimit: { limit: 2 },"));
      const runtime = await env.startRuntime({ functionsDir: own });
      const { id } = await client.enqueue("opened-late" as never, { n: 7 } as never);
      await eventually(
        () =>
          runtime.logs.lines.some(
            (line) => line.msg === "Flow control did not answer; holding the job and trying again.",
          ),
        20_000,
      );
      expect((await client.status(id)).status).not.toBe("succeeded");
      await manager.streams.delete("BLOCKS_WAITING");
      await expect(client.result(id, { timeout: "20s" })).resolves.toMatchObject({ n: 7, attempt: 1 });
    } finally {
      await manager.streams.delete("BLOCKS_WAITING").catch(() => false);
      await rm(own, { recursive: true, force: true });
    }
  });
});
