import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it, onTestFinished, vi } from "vitest";
import type { Runtime } from "../../runtime/runtime";
import type { JetfnClient } from "../../runtime/sdk/client";
import { runCli } from "../helpers/cli";
import { createTestEnvironment, eventually, type TestEnvironment } from "../helpers/environment";

// Durable sleeps (docs/durable-steps.md): `ctx.sleep` ends the run, the job is `sleeping`, and a
// resumption (a signed job message parked in the delayed-jobs stream) starts the next run when the
// time comes, which answers the steps before the sleep from their memos and goes on after it.

const SLEEP_FUNCTIONS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../fixtures/sleep-functions");
const SLOW_MS = 60_000;

let env: TestEnvironment;
let client: JetfnClient;
let runtime: Runtime | undefined;
let runsDir: string;

beforeAll(async () => {
  env = await createTestEnvironment();
  await env.database.sql`create table sleep_rows (id serial primary key, name text not null, step text not null)`;
  client = await env.client();
  runsDir = await mkdtemp(path.join(tmpdir(), "jetfn-sleep-runs-"));
  runtime = await env.startRuntime({ functionsDir: SLEEP_FUNCTIONS }, { laterTestsUseIt: true });
});

afterAll(async () => {
  await env?.close();
  if (runsDir) await rm(runsDir, { recursive: true, force: true });
});

/** What the function noted for the job of `name`, in order. */
async function runs(name: string): Promise<string[]> {
  return (await readFile(path.join(runsDir, name), "utf8").catch(() => "")).split("\n").filter(Boolean);
}

async function enqueueSleepy(name: string, sleep: string | number): Promise<string> {
  const job = await client.enqueue("sleepy" as never, { name, runsFile: path.join(runsDir, name), sleep } as never);
  return job.id;
}

async function statusOf(id: string): Promise<Awaited<ReturnType<JetfnClient["status"]>>> {
  return client.status(id, { steps: true });
}

async function reaches(id: string, status: string): Promise<Awaited<ReturnType<JetfnClient["status"]>>> {
  return eventually(async () => {
    const view = await statusOf(id);
    return view.status === status && view;
  }, SLOW_MS);
}

describe("ctx.sleep", () => {
  it("sleeps between two steps, then goes on in a new run that runs no step twice", { timeout: 120_000 }, async () => {
    // Long enough for the CLI below to find it asleep, on a loaded machine too.
    const id = await enqueueSleepy("nap", "8s");
    // The record and the steps are read side by side: wait for a view that has both of the sleep.
    const asleep = await eventually(async () => {
      const view = await statusOf(id);
      return view.status === "sleeping" && view.steps?.length === 2 && view;
    }, SLOW_MS);
    expect(await runs("nap")).toEqual(["before"]);
    expect(Date.parse(asleep.wakeAt ?? "")).toBeGreaterThan(Date.now());
    expect(asleep.steps?.map((step) => [step.seq, step.key, step.kind, step.status])).toEqual([
      [1, "before", "step", "succeeded"],
      [2, "nap", "sleep", "sleeping"],
    ]);
    const cli = await runCli(["status", id], { NATS_URL: env.nats.url });
    expect(cli.stdout).toContain(`${id}  sleeping  sleepy`);
    expect(cli.stdout).toContain(`wakes at: ${asleep.wakeAt}`);
    // A sleeping job is not in flight.
    expect(runtime?.stats.get("sleepy").inFlight).toBe(0);

    const done = await reaches(id, "succeeded");
    expect(await runs("nap")).toEqual(["before", "after", "returned"]);
    // The same attempt: a sleep is not a failure.
    expect(done).toMatchObject({ attempts: 1, result: { before: { attempt: 1 }, after: { attempt: 1 } } });
    expect(done.wakeAt).toBeUndefined();
    expect(done.steps?.map((step) => [step.key, step.kind, step.status])).toEqual([
      ["before", "step", "succeeded"],
      ["nap", "sleep", "succeeded"],
      ["after", "step", "succeeded"],
    ]);
    const rows = await env.database.sql`select step from sleep_rows where name = 'nap' order by id`;
    expect(rows.map((row) => row.step)).toEqual(["before", "after"]);
  });

  it("sleeps on while the database says its sleep is not over, whatever a runtime's clock says", {
    timeout: 60_000,
  }, async () => {
    // The runtime's clock (this process's) runs 3 s ahead of the database's: it moves the resumption
    // 3 s early, by the database's clock.
    const realNow = Date.now.bind(Date);
    const skew = vi.spyOn(Date, "now").mockImplementation(() => realNow() + 3_000);
    onTestFinished(() => skew.mockRestore());
    const id = await enqueueSleepy("skewed", "2s");
    await reaches(id, "sleeping");
    const [{ wake_at: wakeAt }] = (await env.database.sql`
      select wake_at::text from jetfn.steps where invocation_id = ${id} and key = 'nap'`) as unknown as [
      { wake_at: string },
    ];
    await reaches(id, "succeeded");
    expect(await runs("skewed")).toEqual(["before", "after", "returned"]);
    const [record] = await env.database.sql`select resume, finished_at::text from jetfn.invocations where id = ${id}`;
    // Woken early (by the database's clock), it slept again for the rest, under the sleep's next tokens.
    expect(record?.resume).toMatch(/^2s[2-9]$/);
    expect(Date.parse(record?.finished_at)).toBeGreaterThanOrEqual(Date.parse(wakeAt) - 1_000);
  });

  it("keeps a resumption's attempt while it waits for a concurrency limit", { timeout: 90_000 }, async () => {
    const wakeAt = Date.now() + 3_000;
    const ids = await Promise.all(
      ["one", "two", "three"].map(
        async (name) => (await client.enqueue("sleepy-one-at-a-time" as never, { name, wakeAt } as never)).id,
      ),
    );
    const views = await Promise.all(ids.map((id) => reaches(id, "succeeded")));
    // Each slept on its second attempt, and woke as that attempt, having waited for the others or not.
    expect(views.map((view) => [view.attempts, (view.result as { attempt: number }).attempt])).toEqual([
      [2, 2],
      [2, 2],
      [2, 2],
    ]);
  });

  it("wakes an event listener's invocation, whose id the event gave it", { timeout: 60_000 }, async () => {
    await client.emit("nap.requested", { runsFile: path.join(runsDir, "listener") });
    const id = await eventually(async () => {
      const [row] = await env.database.sql`
        select id from jetfn.invocations where function = 'nap-on-event' and status = 'succeeded'`;
      return row?.id as string | undefined;
    }, SLOW_MS);
    expect(await runs("listener")).toEqual(["before", "after"]);
    const view = await statusOf(id);
    expect(view).toMatchObject({ attempts: 1, result: { id } });
    expect(view.steps?.map((step) => [step.key, step.kind, step.status])).toEqual([
      ["before", "step", "succeeded"],
      ["nap", "sleep", "succeeded"],
      ["after", "step", "succeeded"],
    ]);
  });

  it("goes on at once after a sleep of 0, recording none", { timeout: 60_000 }, async () => {
    const id = await enqueueSleepy("no-nap", 0);
    const done = await reaches(id, "succeeded");
    expect(await runs("no-nap")).toEqual(["before", "after", "returned"]);
    expect(done.steps?.map((step) => step.key)).toEqual(["before", "after"]);
  });

  it("wakes a job that slept while no runtime ran", { timeout: 120_000 }, async () => {
    const id = await enqueueSleepy("unattended", "2s");
    await reaches(id, "sleeping");
    await runtime?.stop();
    runtime = undefined;
    await new Promise((resolve) => setTimeout(resolve, 3_000));
    const [record] = await env.database.sql`select status from jetfn.invocations where id = ${id}`;
    expect(record).toEqual({ status: "sleeping" });
    runtime = await env.startRuntime({ functionsDir: SLEEP_FUNCTIONS }, { laterTestsUseIt: true });
    await reaches(id, "succeeded");
    expect(await runs("unattended")).toEqual(["before", "after", "returned"]);
  });

  it("never runs the steps after the sleep of a job cancelled while it slept", { timeout: 60_000 }, async () => {
    const id = await enqueueSleepy("cancelled", "2s");
    await reaches(id, "sleeping");
    expect((await client.cancel(id, { reason: "no longer wanted" })).status).toBe("cancelled");
    // Past its wake time, and then some: nothing ran on.
    await new Promise((resolve) => setTimeout(resolve, 4_000));
    expect(await runs("cancelled")).toEqual(["before"]);
    expect((await statusOf(id)).status).toBe("cancelled");
  });

  it("replays each job that slept once, not its resumptions", { timeout: 60_000 }, async () => {
    const enqueued = await env.database.sql`select id from jetfn.invocations where function = 'sleepy'`;
    const result = await runCli(["replay", "sleepy", "--since", "10m", "--json"], { NATS_URL: env.nats.url });
    expect(result).toMatchObject({ code: 0, stderr: "" });
    const report = JSON.parse(result.stdout) as { replayed: number; jobs: { replayOf: string }[] };
    expect(report.jobs.map((job) => job.replayOf).sort()).toEqual(enqueued.map((row) => row.id).sort());
  });

  it("refuses a sleep outside jobs, or longer than a year, with E_STEP_INVALID", { timeout: 60_000 }, async () => {
    await expect(
      client.call("sleepy" as never, { name: "called", runsFile: path.join(runsDir, "called") } as never),
    ).rejects.toMatchObject({ code: "E_STEP_INVALID" });
    const id = await enqueueSleepy("too-long", "400d");
    const dead = await reaches(id, "dead");
    expect(dead.error).toMatchObject({ code: "E_STEP_INVALID" });
    expect(await runs("too-long")).toEqual(["before"]);
  });
});
