import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startDashboard } from "../../runtime/dashboard/server";
import type { JetfnClient } from "../../runtime/sdk/client";
import { runCli } from "../helpers/cli";
import { createTestEnvironment, eventually, type TestEnvironment } from "../helpers/environment";

// Durable steps, first piece (docs/durable-steps.md, plan step 3): `ctx.step` commits each step's
// writes with its memo, and a later run of the job (after a crash, or a retry) replays the memos
// instead of running the steps again.

const STEP_FUNCTIONS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../fixtures/step-functions");
const SLOW_MS = 60_000;

let env: TestEnvironment;
let client: JetfnClient;
/** Where the step functions note each run of a step's fn. */
let runsDir: string;

beforeAll(async () => {
  env = await createTestEnvironment();
  await env.database.sql`
    create table step_rows (id serial primary key, name text not null, step text not null, attempt int, invocation text)`;
  await env.database.sql`create table step_locks (id int primary key, n int not null)`;
  await env.database.sql`create table step_gates (name text primary key)`;
  client = await env.client();
  runsDir = await mkdtemp(path.join(tmpdir(), "jetfn-step-runs-"));
});

afterAll(async () => {
  await env?.close();
  if (runsDir) await rm(runsDir, { recursive: true, force: true });
});

/** The steps whose fn ran for the job of `name`, in order, as the function noted them. */
async function fnRuns(name: string): Promise<string[]> {
  return (await readFile(path.join(runsDir, name), "utf8")).split("\n").filter(Boolean);
}

function startStepRuntime(options: Parameters<TestEnvironment["startRuntime"]>[0] = {}) {
  return env.startRuntime({ functionsDir: STEP_FUNCTIONS, ...options });
}

async function stepRows(name: string): Promise<{ id: number; step: string; attempt: number }[]> {
  return (await env.database.sql`select id, step, attempt from step_rows where name = ${name} order by id`) as never;
}

async function memos(
  id: string,
): Promise<{ key: string; seq: number; kind: string; status: string; result: unknown }[]> {
  return (await env.database.sql`
    select key, seq, kind, status, result from jetfn.steps where invocation_id = ${id} order by seq`) as never;
}

async function ended(id: string): Promise<Awaited<ReturnType<JetfnClient["status"]>>> {
  return eventually(async () => {
    const status = await client.status(id);
    return ["succeeded", "dead"].includes(status.status) && status;
  }, SLOW_MS);
}

describe("durable steps", () => {
  it("runs no step twice when the runtime stops after the second step's COMMIT", { timeout: 120_000 }, async () => {
    const first = await startStepRuntime({ shutdownGrace: "0s", maxAckWait: "2s" });
    const job = await client.enqueue(
      "three-steps" as never,
      { name: "stopped", runsFile: path.join(runsDir, "stopped"), holdThird: true } as never,
    );
    // The second step has committed; the third runs (its row written, not committed) and holds.
    await eventually(async () => (await memos(job.id)).length === 2, SLOW_MS);
    await eventually(async () => (await fnRuns("stopped")).includes("third"), SLOW_MS);
    // The first step made the job's record, running.
    const [record] = await env.database.sql`select status from jetfn.invocations where id = ${job.id}`;
    expect(record).toEqual({ status: "running" });
    await first.stop();

    await startStepRuntime({ maxAckWait: "2s" });
    const status = await ended(job.id);
    expect(status.status).toBe("succeeded");
    const rows = await stepRows("stopped");
    // One row per step: the third's first try was rolled back when its runtime stopped.
    expect(rows.map((row) => row.step)).toEqual(["first", "second", "third"]);
    expect(rows.map((row) => row.attempt)).toEqual([1, 1, 2]);
    // The second run answered the first two steps from their memos, without running their fn.
    expect(await fnRuns("stopped")).toEqual(["first", "second", "third", "third"]);
    const result = status.result as {
      first: { id: number; at: string; attempt: number };
      second: { id: number; echo: string };
      third: number;
      firstAtType: string;
    };
    // The replayed steps answered with what the first run stored.
    expect(result.first).toMatchObject({ id: rows[0]?.id, attempt: 1 });
    expect(result.second.id).toBe(rows[1]?.id);
    expect(result.third).toBe(rows[2]?.id);
    // A Date comes back as its JSON string, in the run that made it as in every later one.
    expect(result.firstAtType).toBe("string");
    expect((await memos(job.id)).map((memo) => [memo.key, memo.seq, memo.kind, memo.status])).toEqual([
      ["first", 1, "step", "succeeded"],
      ["second", 2, "step", "succeeded"],
      ["third", 3, "step", "succeeded"],
    ]);
    // The job the second step enqueued was published once, with the step's commit.
    expect((await ended(result.second.echo)).result).toEqual({ value: rows[1]?.id });
  });

  it("replays committed steps when a job is retried after failing between them", { timeout: 120_000 }, async () => {
    const runtime = await startStepRuntime();
    const job = await client.enqueue(
      "three-steps" as never,
      { name: "retried", runsFile: path.join(runsDir, "retried"), failBetween: true } as never,
    );
    const status = await ended(job.id);
    expect(status).toMatchObject({ status: "succeeded", attempts: 2 });
    expect((await stepRows("retried")).map((row) => [row.step, row.attempt])).toEqual([
      ["first", 1],
      ["second", 1],
      ["third", 2],
    ]);
    expect(await fnRuns("retried")).toEqual(["first", "second", "third"]);
    // Status lists the steps when asked, and `jetfn status` always asks.
    const listed = await client.status(job.id, { steps: true });
    expect(listed.steps?.map((step) => [step.seq, step.key, step.kind, step.status, step.attempts])).toEqual([
      [1, "first", "step", "succeeded", 1],
      [2, "second", "step", "succeeded", 1],
      // A step counts its own attempts: the job's second attempt ran "third" once.
      [3, "third", "step", "succeeded", 1],
    ]);
    expect((await client.status(job.id)).steps).toBeUndefined();
    const cli = await runCli(["status", job.id], { NATS_URL: env.nats.url });
    expect(cli.stdout).toContain("steps: 3");
    // And the dashboard's page of the invocation draws them as a table.
    const dashboard = await startDashboard({ runtime, port: 0, token: "steps-token-0123456789" });
    try {
      const page = await (await fetch(`${dashboard.url}/invocations/${job.id}`)).text();
      const rows = [...page.matchAll(/<tr data-step="([^"]+)">([\s\S]*?)<\/tr>/g)].map((row) =>
        [...(row[2] as string).matchAll(/<td[^>]*>([\s\S]*?)<\/td>/g)]
          .slice(0, 5)
          .map((cell) => (cell[1] as string).replace(/<[^>]+>/g, "")),
      );
      expect(rows).toEqual([
        ["1", "first", "step", "succeeded", "1"],
        ["2", "second", "step", "succeeded", "1"],
        ["3", "third", "step", "succeeded", "1"],
      ]);
      // Its database changes say which step made each.
      expect(page).toMatch(/<td class="muted">attempt 1 · step third<\/td>/);
    } finally {
      await dashboard.close();
    }
    expect(cli.stdout).toMatch(/\n {2}3 third +step {2}succeeded {2}attempt 1 {2}\d{4}-\d\d-\d\dT[\d:.]+Z {2}\d+ms\n/);
    // Each step's rows are stamped with the job in the audit log, as a job's own writes are, and
    // with the step's key and the step's attempt that ran it (migrations 0033 and 0036).
    const audited = await env.database.sql<{ stamp: string }[]>`
      select concat_ws('/', function, invocation_id, attempt, step) as stamp from jetfn.audit_log
      where table_name = 'step_rows' and new_row->>'name' = 'retried' order by id`;
    expect(audited.map((row) => row.stamp)).toEqual([
      `three-steps/${job.id}/1/first`,
      `three-steps/${job.id}/1/second`,
      `three-steps/${job.id}/1/third`,
    ]);
    // `jetfn audit <id>` heads each step's changes, in the steps' order; --step keeps one.
    const audit = await runCli(["audit", job.id], { DATABASE_URL: env.database.url });
    const headings = audit.stdout.split("\n").filter((line) => line.startsWith("step "));
    expect(headings.map((line) => line.replace(/ \(.*/, ""))).toEqual([
      'step "first"',
      'step "second"',
      'step "third"',
    ]);
    expect(headings[0]).toMatch(/^step "first" \(attempt 1, at \d{4}-\d\d-\d\d [\d:]{8}, txid \d+\)$/);
    expect(audit.stdout).toMatch(new RegExp(`\n {4}\\S+ \\S+  three-steps ${job.id} step "third"  INSERT step_rows`));
    expect(audit.stdout).not.toContain("not the step's");
    const third = await runCli(["audit", job.id, "--step", "third"], { DATABASE_URL: env.database.url });
    expect(third.stdout.split("\n").filter((line) => line.startsWith("step "))).toHaveLength(1);
    expect(third.stdout).toContain(`three-steps ${job.id} step "third"  INSERT step_rows`);
    expect(third.stdout).not.toContain('step "first"');
    const refused = await runCli(["audit", "--step", "third"], { DATABASE_URL: env.database.url });
    expect({ code: refused.code, said: refused.stderr.includes("--step needs the invocation id") }).toEqual({
      code: 1,
      said: true,
    });
  });

  it("keys a name called again in one run name#2, name#3", { timeout: 60_000 }, async () => {
    await startStepRuntime();
    const job = await client.enqueue("step-rules" as never, { case: "repeat" } as never);
    expect(await ended(job.id)).toMatchObject({ status: "succeeded", result: [10, 20, 30] });
    expect((await memos(job.id)).map((memo) => [memo.key, memo.result])).toEqual([
      ["notify", 10],
      ["notify#2", 20],
      ["notify#3", 30],
    ]);
  });

  it("records a step that touched no table, and runs steps called together one after another", {
    timeout: 60_000,
  }, async () => {
    await startStepRuntime();
    const api = await client.enqueue("step-rules" as never, { case: "api-call" } as never);
    expect(await ended(api.id)).toMatchObject({ status: "succeeded", result: { answer: 42 } });
    expect(await memos(api.id)).toMatchObject([{ key: "lookup", result: { answer: 42 } }]);
    const parallel = await client.enqueue("step-rules" as never, { case: "parallel" } as never);
    expect(await ended(parallel.id)).toMatchObject({
      status: "succeeded",
      result: { a: "a", b: "b", order: ["a starts", "a ends", "b starts"] },
    });
  });

  it.each([
    ["nested", "E_STEP_INVALID", /cannot nest/],
    ["db-after-step", "E_STEP_INVALID", /ctx\.db was used outside a step/],
    ["step-after-db", "E_STEP_INVALID", /after the handler used ctx\.db/],
    ["bad-name", "E_STEP_INVALID", /no "#"/],
    ["bidi-name", "E_STEP_INVALID", /no "#"/],
    // A result JSON cannot hold fails its step at once (the code is wrong, not the moment).
    ["not-json", "E_STEP_FAILED", /step "big" of step-rules failed after 1 attempt: the result of step "big"/],
    ["enqueue-in-step", "E_STEP_INVALID", /ctx\.enqueue was called while step "mail" runs/],
    ["enqueue-after-step", "E_STEP_INVALID", /step\.enqueue was called after step "keep" ended/],
    ["refused-caught", "E_STATEMENT_REFUSED", /./],
  ])("fails a job whose handler breaks a rule of steps: %s", { timeout: 60_000 }, async (rule, code, message) => {
    await startStepRuntime();
    const job = await client.enqueue("step-rules" as never, { case: rule } as never);
    const status = await ended(job.id);
    expect(status.status).toBe("dead");
    expect(status.error).toMatchObject({ code });
    expect((status.error as { message?: string } | null)?.message).toMatch(message);
  });

  it("commits nothing of a step that outlived its run's timeout", { timeout: 60_000 }, async () => {
    await startStepRuntime();
    const job = await client.enqueue("slow-step" as never, { name: "outlived" } as never);
    // The first attempt's step writes at 2 s, the job then waiting for its retry at 4 s.
    expect(await ended(job.id)).toMatchObject({ status: "succeeded", result: 2, attempts: 2 });
    expect((await stepRows("outlived")).map((row) => row.attempt)).toEqual([2]);
    expect(await memos(job.id)).toMatchObject([{ key: "slow", result: 2 }]);
  });

  it("gives the run that made a step's object the key order later runs read back", { timeout: 60_000 }, async () => {
    await startStepRuntime();
    const job = await client.enqueue("step-rules" as never, { case: "key-order" } as never);
    const status = await ended(job.id);
    expect(status).toMatchObject({ status: "succeeded", attempts: 2 });
    // Postgres keeps jsonb keys shorter first; JavaScript puts integer-like keys first in any object.
    expect(status.result).toEqual([
      ["10", "al", "bob", "zed", "éa"],
      ["a", "b"],
    ]);
    // The first attempt, which made the value, saw the same order as the second, which replayed it.
    expect((status.errors as { message: string }[])[0]?.message).toBe(JSON.stringify(status.result));
  });

  it("starts no step queued behind one whose failure ended the run", { timeout: 60_000 }, async () => {
    await startStepRuntime();
    const runsFile = path.join(runsDir, "failed-pair");
    const job = await client.enqueue("step-rules" as never, { case: "failed-pair", runsFile } as never);
    // a fails both its attempts (each run ending at its failure), then the job for good, at once.
    expect(await ended(job.id)).toMatchObject({ status: "dead", attempts: 1, error: { code: "E_STEP_FAILED" } });
    await expect(readFile(runsFile, "utf8")).rejects.toMatchObject({ code: "ENOENT" });
  });

  it("rolls back a step still holding row locks when its run is cut off", { timeout: 60_000 }, async () => {
    await env.database.sql`insert into step_locks (id, n) values (1, 0)`;
    await startStepRuntime();
    const job = await client.enqueue("locked-step" as never, { id: 1 } as never);
    // The second attempt's step took the lock the first attempt's step held when its run ended.
    expect(await ended(job.id)).toMatchObject({ status: "succeeded", result: 2, attempts: 2 });
    expect(await env.database.sql`select n from step_locks where id = 1`).toEqual([{ n: 1 }]);
  });

  it("ends as cancelled a job whose record was cancelled while its step ran", { timeout: 60_000 }, async () => {
    const runtime = await startStepRuntime();
    const job = await client.enqueue("gated-steps" as never, { name: "cancel-race" } as never);
    await eventually(async () => (await memos(job.id)).length === 1, SLOW_MS);
    // As the cancel API writes it, before its mark reaches the runtime running the job.
    await env.database.sql`update jetfn.invocations set status = 'cancelled' where id = ${job.id}`;
    await env.database.sql`insert into step_gates (name) values ('cancel-race')`;
    await eventually(
      () =>
        runtime.logs.lines.some((line) => line.invocationId === job.id && String(line.msg).startsWith("Job cancelled")),
      SLOW_MS,
    );
    expect((await client.status(job.id)).status).toBe("cancelled");
    expect((await memos(job.id)).map((memo) => memo.key)).toEqual(["one"]);
    expect((await stepRows("cancel-race")).map((row) => row.step)).toEqual(["one"]);
  });

  it("fails a step in a function isolated in a thread with E_STEP_INVALID", { timeout: 60_000 }, async () => {
    await startStepRuntime();
    const job = await client.enqueue("step-in-thread" as never, {} as never);
    const status = await ended(job.id);
    expect(status).toMatchObject({ status: "dead", error: { code: "E_STEP_INVALID" } });
  });

  it("runs no step of a job whose id has an ended record, or another function's record", {
    timeout: 60_000,
  }, async () => {
    const runtime = await startStepRuntime();
    await env.database.sql`
      insert into jetfn.invocations (id, function, status, attempts, result)
      values ('steps-ended', 'three-steps', 'succeeded', 1, '"kept"'), ('steps-other', 'step-echo', 'failed', 1, null)`;
    const runsFile = path.join(runsDir, "fenced");
    for (const id of ["steps-ended", "steps-other"]) {
      await client.enqueue("three-steps" as never, { name: "fenced", runsFile } as never, { id });
    }
    await eventually(
      () =>
        runtime.logs.lines.some(
          (line) =>
            line.invocationId === "steps-ended" &&
            String(line.msg).startsWith("Another attempt finished this job first"),
        ) &&
        runtime.logs.lines.some(
          (line) => line.invocationId === "steps-other" && String(line.msg).startsWith("Job refused"),
        ),
      SLOW_MS,
    );
    // Stopped at its first step, before its fn ran: no row, no memo, and the records as they were.
    await expect(readFile(runsFile, "utf8")).rejects.toMatchObject({ code: "ENOENT" });
    expect(await stepRows("fenced")).toEqual([]);
    expect(await memos("steps-ended")).toEqual([]);
    expect(await memos("steps-other")).toEqual([]);
    expect(await client.status("steps-ended")).toMatchObject({ status: "succeeded", result: "kept" });
    expect(await client.status("steps-other")).toMatchObject({ status: "failed" });
  });

  it("runs a call's steps at once, without memos", { timeout: 60_000 }, async () => {
    await startStepRuntime();
    expect(await client.call("step-rules" as never, { case: "repeat" } as never)).toEqual([10, 20, 30]);
    expect(await client.call("step-rules" as never, { case: "api-call" } as never)).toEqual({ answer: 42 });
  });
});
