import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { DebounceOptions } from "../../runtime/flow/keyed-enqueue-request";
import type { JetfnClient } from "../../runtime/sdk/client";
import { runCli } from "../helpers/cli";
import type { TestEnvironment } from "../helpers/environment";
import { createItemsEnvironment, type ItemsEnvironment } from "../helpers/items-environment";

// Debounce maxWait: with a steady stream of enqueues, every job is superseded by the next, forever;
// maxWait ends a burst once its first job has waited that long, and the latest job runs. Each
// bound below follows from when jobs were enqueued, not from how fast the machine moves them.
let env: TestEnvironment;
let client: JetfnClient;
let ended: ItemsEnvironment["ended"];
let namesLike: ItemsEnvironment["namesLike"];

beforeAll(async () => {
  ({ env, client, ended, namesLike } = await createItemsEnvironment());
});

afterAll(async () => {
  await env?.close();
});

/** One enqueue of the stream: its id, when it was sent and when its reply came. */
interface Sent {
  id: string;
  at: number;
  done: number;
}

/**
 * Enqueues a debounced insert-item job named `<prefix>-<n>` every `everyMs` until `runs` of them
 * have run (their rows are in `items`); `beside(n)` runs after enqueue n. Throws after `capMs`.
 */
async function enqueueUntilRuns(
  prefix: string,
  debounce: DebounceOptions,
  options: { everyMs: number; runs: number; capMs: number; beside?: (n: number) => void },
): Promise<Sent[]> {
  const sent: Sent[] = [];
  const started = Date.now();
  for (let n = 0; ; n++) {
    const at = Date.now();
    const job = await client
      .enqueue("insert-item", { name: `${prefix}-${n}` }, { debounce })
      // A runtime stopping may refuse one request (E_SHUTTING_DOWN, no answer): send it again.
      .catch(() => client.enqueue("insert-item", { name: `${prefix}-${n}` }, { debounce }));
    sent.push({ id: job.id, at, done: Date.now() });
    options.beside?.(n);
    if ((await namesLike(`${prefix}-`)).length >= options.runs) return sent;
    if (Date.now() - started > options.capMs) {
      throw new Error(`no ${options.runs} runs within ${options.capMs}ms of steady enqueues`);
    }
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, options.everyMs - (Date.now() - at))));
  }
}

/** The numbers of the jobs that ran, in the order they ran. */
async function ranJobs(prefix: string): Promise<number[]> {
  return (await namesLike(`${prefix}-`)).map((name) => Number(name.slice(prefix.length + 1)));
}

/** When each job of `ids` that ran started (epoch ms), from its record. */
async function startTimes(ids: string[]): Promise<Map<string, number>> {
  const rows = await env.database.sql<{ id: string; started_at: Date }[]>`
    select id, started_at from jetfn.invocations where id = any(${ids}) and status = 'succeeded'`;
  return new Map(rows.map((row) => [row.id, row.started_at.getTime()]));
}

describe("debounce maxWait, with two runtimes", () => {
  it("runs the latest job once the first of a burst waited maxWait, and again in the next burst, while enqueues keep coming", {
    timeout: 120_000,
  }, async () => {
    await Promise.all([env.startRuntime(), env.startRuntime()]);
    const sent = await enqueueUntilRuns(
      "steady",
      { key: "steady", period: "1s", maxWait: "2s" },
      { everyMs: 300, runs: 2, capMs: 30_000 },
    );
    const [first, second] = await ranJobs("steady");
    const at = (n: number | undefined) => sent[n as number] as Sent;
    // Burst 1 began with job 0; its last job was enqueued no later than 2 s after it.
    expect(first).toBeGreaterThan(0);
    expect(at(first).at).toBeLessThanOrEqual(at(0).done + 2_000);
    // Burst 2 began with the next job.
    expect(second).toBeGreaterThan(first as number);
    expect(at(second).at).toBeLessThanOrEqual(at((first as number) + 1).done + 2_000);
    // Every other job of those bursts was superseded, by the job after it.
    for (let n = 0; n < (second as number); n++) {
      if (n === first) continue;
      const view = await ended(at(n).id);
      expect(view.status).toBe("superseded");
      expect(view.error).toMatchObject({ code: "E_SUPERSEDED", message: expect.stringContaining(at(n + 1).id) });
    }
    // The stream stopped: its last burst ends with its last job, one period later.
    const last = sent.at(-1) as Sent;
    expect((await ended(last.id)).status).toBe("succeeded");
  });

  it("ends each burst at maxWait when enqueues come faster than the least debounce delay (every 50 ms)", {
    timeout: 90_000,
  }, async () => {
    await Promise.all([env.startRuntime(), env.startRuntime()]);
    const debounce = { key: "fast", period: "1s", maxWait: "2s" };
    const sent: Sent[] = [];
    const streamEnds = Date.now() + 6_000;
    for (let n = 0; Date.now() < streamEnds; n++) {
      const at = Date.now();
      const job = await client.enqueue("insert-item", { name: `fast-${n}` }, { debounce });
      sent.push({ id: job.id, at, done: Date.now() });
      await new Promise((resolve) => setTimeout(resolve, Math.max(0, 50 - (Date.now() - at))));
    }
    const last = sent.length - 1;
    expect((await ended((sent[last] as Sent).id)).status).toBe("succeeded");
    const ran = await ranJobs("fast");
    const started = await startTimes(sent.map((job) => job.id));
    // Bursts of 2 s in a 6 s stream: at least two ended while enqueues kept coming.
    expect(ran.filter((n) => n < last).length, `ran: ${ran.join(", ")} of 0-${last}`).toBeGreaterThanOrEqual(2);
    let burstStart = 0;
    for (const n of ran) {
      const job = sent[n] as Sent;
      const start = sent[burstStart] as Sent;
      // The job that ended the burst was enqueued within maxWait of its start, and ran soon after.
      expect(job.at).toBeLessThanOrEqual(start.done + 2_000);
      expect(started.get(job.id), `job ${n} (burst from ${burstStart})`).toBeLessThanOrEqual(start.done + 3_500);
      burstStart = n + 1;
    }
    // Every other job ended superseded.
    const [row] = await env.database.sql<{ superseded: number }[]>`
      select count(*)::int as superseded from jetfn.invocations
      where id = any(${sent.map((job) => job.id)}) and status = 'superseded'`;
    expect(row?.superseded).toBe(sent.length - ran.length);
  });

  it("keeps a burst's start in the claim: a job enqueued after every runtime that saw the burst begin stopped still ends it in time", {
    timeout: 120_000,
  }, async () => {
    const old = await Promise.all([env.startRuntime(), env.startRuntime()]);
    let restarted: number | undefined;
    let restart: Promise<void> | undefined;
    // A new runtime starts, then the two that answered the first enqueues stop, while enqueues go on.
    const beside = (n: number) => {
      if (n !== 1) return;
      restart = (async () => {
        await env.startRuntime();
        await Promise.all(old.map((runtime) => runtime.stop()));
        restarted = Date.now();
      })();
    };
    // maxWait leaves the restart room: in one CI run on a loaded machine, starting the new runtime
    // and stopping the old ones took over 11 s (about 0.3 s here alone), and the burst ended first.
    const sent = await enqueueUntilRuns(
      "kept",
      { key: "kept", period: "3s", maxWait: "20s" },
      { everyMs: 500, runs: 1, capMs: 60_000, beside },
    );
    await restart;
    const [first] = await ranJobs("kept");
    const job = sent[first as number] as Sent;
    // The job that ended burst 1 was enqueued after the restart, within maxWait of the burst's start.
    expect(restarted).toBeDefined();
    expect(job.at).toBeGreaterThanOrEqual(restarted as number);
    expect(job.at).toBeLessThanOrEqual((sent[0] as Sent).done + 20_000);
    expect((await ended(job.id)).status).toBe("succeeded");
    expect((await ended((sent[0] as Sent).id)).status).toBe("superseded");
  });

  it("takes --debounce-max-wait on the CLI, and refuses one shorter than the period", { timeout: 90_000 }, async () => {
    await env.startRuntime();
    const cli = (...flags: string[]) =>
      runCli(["enqueue", "insert-item", JSON.stringify({ name: "cli-max-wait" }), "--debounce", "cli", ...flags], {
        NATS_URL: env.nats.url,
      });
    const short = await cli("--debounce-period", "1s", "--debounce-max-wait", "500ms");
    expect(short.code).not.toBe(0);
    expect(short.stderr).toMatch(/maxWait must be between the period/);
    const good = await cli("--debounce-period", "1s", "--debounce-max-wait", "1m");
    expect(good.code).toBe(0);
    expect((await ended(good.stdout.trim())).status).toBe("succeeded");
    const alone = await runCli(["enqueue", "insert-item", "{}", "--debounce-max-wait", "1m"], {
      NATS_URL: env.nats.url,
    });
    expect(alone.code).not.toBe(0);
    expect(alone.stderr).toMatch(/need --debounce/);
  });
});
