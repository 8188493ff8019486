import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { jetstream } from "@nats-io/jetstream";
import { headers } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Runtime } from "../../runtime/runtime";
import type { JetfnClient } from "../../runtime/sdk/client";
import { runCli } from "../helpers/cli";
import { createTestEnvironment, eventually, type TestEnvironment } from "../helpers/environment";

// Per-step retries (docs/durable-steps.md, "Retries: per step, and per job"): a step that throws is
// tried again on its own, in a later run started by a resumption, without spending the job's
// attempts; once it has used its own, ctx.step throws E_STEP_FAILED, in that run and every later one.

const RETRY_FUNCTIONS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../fixtures/step-retry-functions");
const SLOW_MS = 60_000;

let env: TestEnvironment;
let client: JetfnClient;
let runsDir: string;
let runtime: Runtime;

beforeAll(async () => {
  env = await createTestEnvironment();
  await env.database
    .sql`create table retry_rows (id serial primary key, name text not null, step text not null, attempt int)`;
  client = await env.client();
  runsDir = await mkdtemp(path.join(tmpdir(), "jetfn-retry-runs-"));
  runtime = await env.startRuntime({ functionsDir: RETRY_FUNCTIONS });
});

afterAll(async () => {
  await env?.close();
  if (runsDir) await rm(runsDir, { recursive: true, force: true });
});

/** What the function noted for the job of `name`, in order. */
async function runs(name: string): Promise<string[]> {
  return (await readFile(path.join(runsDir, name), "utf8").catch(() => "")).split("\n").filter(Boolean);
}

async function enqueueFlaky(name: string, input: Record<string, unknown> = {}): Promise<string> {
  const job = await client.enqueue(
    "flaky-steps" as never,
    { name, runsFile: path.join(runsDir, name), ...input } as never,
  );
  return job.id;
}

type StatusView = Awaited<ReturnType<JetfnClient["status"]>>;

async function reaches(id: string, status: string, also: (view: StatusView) => boolean = () => true) {
  return eventually(async () => {
    const view = await client.status(id, { steps: true });
    return view.status === status && also(view) && view;
  }, SLOW_MS);
}

const stepsOf = (view: StatusView) => view.steps?.map((step) => [step.key, step.status, step.attempts]);

describe("a step that throws", () => {
  it("runs again on its own after its backoff, without running the steps before it or spending the job's attempts", {
    timeout: 90_000,
  }, async () => {
    // Long enough after the first attempt for the CLI to find it waiting, on a loaded machine too.
    const before = runtime.stats.get("flaky-steps");
    const id = await enqueueFlaky("twice", { failures: 2, backoff: ["8s", "100ms"] });
    // Between its attempts the job waits, `failed`, for the resumption that runs the step again.
    const waiting = await reaches(id, "failed", (view) => view.steps?.length === 2);
    expect(stepsOf(waiting)).toEqual([
      ["first", "succeeded", 1],
      ["flaky", "retrying", 1],
    ]);
    expect(Date.parse(waiting.retryAt ?? "")).toBeGreaterThan(Date.parse((waiting.error as { at: string }).at));
    expect(waiting.error).toMatchObject({ attempt: 1, step: "flaky", message: "attempt 1 failed" });
    const cli = await runCli(["status", id], { NATS_URL: env.nats.url });
    expect(cli.stdout).toContain(`retries its step at: ${waiting.retryAt}`);
    expect(cli.stdout).toContain('attempt 1 of step "flaky": E_HANDLER_FAILED Error: attempt 1 failed');

    const done = await reaches(id, "succeeded");
    expect(await runs("twice")).toEqual(["first", "flaky 1", "flaky 2", "flaky 3", "last"]);
    // One job attempt; the step's third attempt made the value, and only its writes were kept.
    expect(done).toMatchObject({ attempts: 1, result: { first: 1, flaky: { attempt: 3 }, attempt: 1 } });
    expect(done.retryAt).toBeUndefined();
    // Each failed attempt of the step counts as a failure that is retried, none as dead.
    const after = runtime.stats.get("flaky-steps");
    expect([after.errors - before.errors, after.retries - before.retries, after.dead - before.dead]).toEqual([2, 2, 0]);
    expect(stepsOf(done)).toEqual([
      ["first", "succeeded", 1],
      ["flaky", "succeeded", 3],
      ["last", "succeeded", 1],
    ]);
    expect((done.errors as { step: string; attempt: number }[]).map((error) => [error.step, error.attempt])).toEqual([
      ["flaky", 1],
      ["flaky", 2],
    ]);
    const rows = await env.database.sql`select step, attempt from retry_rows where name = 'twice' order by id`;
    expect(rows).toEqual([
      { step: "first", attempt: 1 },
      { step: "flaky", attempt: 3 },
    ]);
    // The audit rows say which step, and which of its attempts, wrote them.
    const audited = await env.database.sql`
      select step, attempt from jetfn.audit_log where table_name = 'retry_rows' and invocation_id = ${id} order by id`;
    expect(audited).toEqual([
      { step: "first", attempt: 1 },
      { step: "flaky", attempt: 3 },
    ]);
  });

  it("waits as RetryAfterError asks rather than its backoff", { timeout: 60_000 }, async () => {
    const id = await enqueueFlaky("later", { failures: 1, how: "retry-after", backoff: "100ms" });
    const waiting = await reaches(id, "failed", (view) => view.retryAt !== undefined);
    const failedAt = Date.parse((waiting.error as { at: string }).at);
    expect(Date.parse(waiting.retryAt ?? "") - failedAt).toBeGreaterThanOrEqual(1_400);
    await reaches(id, "succeeded");
    expect(await runs("later")).toEqual(["first", "flaky 1", "flaky 2", "last"]);
  });

  it("throws E_STEP_FAILED once its attempts are used; uncaught, it ends the job dead at once", {
    timeout: 60_000,
  }, async () => {
    const id = await enqueueFlaky("hopeless", { failures: 9 });
    const dead = await reaches(id, "dead");
    expect(await runs("hopeless")).toEqual(["first", "flaky 1", "flaky 2", "flaky 3"]);
    // The job's own five attempts were not spent: running it again would only throw the memo again.
    expect(dead.attempts).toBe(1);
    expect(dead.error).toMatchObject({
      code: "E_STEP_FAILED",
      message: 'step "flaky" of flaky-steps failed after 3 attempts: attempt 3 failed',
    });
    expect(stepsOf(dead)).toEqual([
      ["first", "succeeded", 1],
      ["flaky", "failed", 3],
    ]);
  });

  it("is tried as often as its function's retry policy says when it has none of its own", {
    timeout: 60_000,
  }, async () => {
    const id = await enqueueFlaky("default-policy", { failures: 9, stepOptions: "default" });
    const dead = await reaches(id, "dead");
    expect(await runs("default-policy")).toEqual(["first", "flaky 1", "flaky 2", "flaky 3", "flaky 4", "flaky 5"]);
    expect(dead).toMatchObject({ attempts: 1, error: { code: "E_STEP_FAILED" } });
  });

  it("is not counted as failed when its run is cancelled while it runs", { timeout: 60_000 }, async () => {
    const id = await enqueueFlaky("cancelled-in-step", { hang: true });
    await eventually(async () => (await runs("cancelled-in-step")).includes("flaky 1"), SLOW_MS);
    expect((await client.cancel(id, { reason: "stop it" })).status).toBe("cancelled");
    await reaches(id, "cancelled");
    // The step's error was the run's stop, not a failed attempt of its own: nothing recorded, nothing resumed.
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    expect(await runs("cancelled-in-step")).toEqual(["first", "flaky 1"]);
    const rows = await env.database.sql`select key, status from jetfn.steps where invocation_id = ${id} order by seq`;
    expect(rows).toEqual([{ key: "first", status: "succeeded" }]);
  });

  it("is not counted as failed when its run's timeout cuts it off: the job's attempt is", {
    timeout: 60_000,
  }, async () => {
    const runsFile = path.join(runsDir, "hanging");
    const job = await client.enqueue("hanging-step" as never, { runsFile } as never);
    const done = await reaches(job.id, "succeeded");
    expect(done).toMatchObject({ attempts: 2, result: 1, error: { code: "E_HANDLER_TIMEOUT" } });
    expect(await runs("hanging")).toEqual(["hangs 1 (job attempt 1)", "hangs 1 (job attempt 2)"]);
  });

  it("fails at once on NonRetryableError", { timeout: 60_000 }, async () => {
    const id = await enqueueFlaky("no-retry", { failures: 1, how: "non-retryable", compensate: true });
    const done = await reaches(id, "succeeded");
    expect(await runs("no-retry")).toEqual([
      "first",
      "flaky 1",
      "caught E_STEP_FAILED: attempt 1 gives up",
      "refund",
      "last",
    ]);
    expect(done.result).toMatchObject({ flaky: { failed: "E_STEP_FAILED", cause: "attempt 1 gives up" } });
  });

  it("throws the same E_STEP_FAILED in later runs, at the same place, without running the step again", {
    timeout: 60_000,
  }, async () => {
    const id = await enqueueFlaky("compensated", { failures: 9, compensate: true, napAfter: true });
    const done = await reaches(id, "succeeded");
    // The run after the nap replays the failure from its memo: caught again, the refund answered
    // from its memo, and the last step run.
    expect(await runs("compensated")).toEqual([
      "first",
      "flaky 1",
      "flaky 2",
      "flaky 3",
      "caught E_STEP_FAILED: attempt 3 failed",
      "refund",
      "caught E_STEP_FAILED: attempt 3 failed",
      "last",
    ]);
    expect(done).toMatchObject({
      attempts: 1,
      result: { flaky: { failed: "E_STEP_FAILED", cause: "attempt 3 failed" } },
    });
    expect(stepsOf(done)).toEqual([
      ["first", "succeeded", 1],
      ["flaky", "failed", 3],
      ["refund", "succeeded", 1],
      ["nap", "succeeded", 1],
      ["last", "succeeded", 1],
    ]);
  });

  it("never runs the step again once its job is cancelled while it waits", { timeout: 60_000 }, async () => {
    const id = await enqueueFlaky("cancelled", { failures: 2, backoff: "2s" });
    await reaches(id, "failed", (view) => view.retryAt !== undefined);
    expect((await client.cancel(id, { reason: "no longer wanted" })).status).toBe("cancelled");
    await new Promise((resolve) => setTimeout(resolve, 3_500));
    expect(await runs("cancelled")).toEqual(["first", "flaky 1"]);
    expect((await client.status(id)).status).toBe("cancelled");
  });

  it("runs nothing for a copy of the job's message while its step waits to run again", {
    timeout: 60_000,
  }, async () => {
    const id = await enqueueFlaky("copied", { failures: 1, backoff: "3s" });
    await reaches(id, "failed", (view) => view.retryAt !== undefined);
    // Any client may publish a job with the id: this one has the same input, and another.
    const header = headers();
    header.set("Jetfn-Id", id);
    const js = jetstream(client.connection);
    const input = { name: "copied", runsFile: path.join(runsDir, "copied"), failures: 0 };
    await js.publish("fn.job.flaky-steps", JSON.stringify(input), { headers: header });
    await js.publish("fn.job.flaky-steps", JSON.stringify({ ...input, name: "copied-2" }), { headers: header });
    await reaches(id, "succeeded");
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    expect(await runs("copied")).toEqual(["first", "flaky 1", "flaky 2", "last"]);
    const rows = await env.database.sql`select name, step from retry_rows where name like 'copied%' order by id`;
    expect(rows.map((row) => `${row.name}/${row.step}`)).toEqual(["copied/first", "copied/flaky"]);
  });
});

describe("jetfn retry of a job that died of a failed step", () => {
  it("resumes it under its id: the steps that committed answer from their memos, the failed one runs again", {
    timeout: 60_000,
  }, async () => {
    const fixedFile = path.join(runsDir, "resumed-fixed");
    const id = await enqueueFlaky("resumed", { failures: 9, fixedFile });
    const dead = await reaches(id, "dead");
    expect(dead.error).toMatchObject({ code: "E_STEP_FAILED" });
    // The cause is fixed, then the operator retries the job.
    await writeFile(fixedFile, "");
    const cli = await runCli(["retry", id], { NATS_URL: env.nats.url });
    expect(cli).toMatchObject({ code: 0, stdout: `${id} resumed from its steps  flaky-steps\n` });
    const done = await reaches(id, "succeeded");
    expect(await runs("resumed")).toEqual(["first", "flaky 1", "flaky 2", "flaky 3", "flaky 1", "last"]);
    expect(done).toMatchObject({ attempts: 1, result: { first: 1, flaky: { attempt: 1 } } });
    expect(stepsOf(done)).toEqual([
      ["first", "succeeded", 1],
      ["flaky", "succeeded", 1],
      ["last", "succeeded", 1],
    ]);
    const rows = await env.database.sql`select step from retry_rows where name = 'resumed' order by id`;
    expect(rows.map((row) => row.step)).toEqual(["first", "flaky"]);
    // It is no longer dead: a second retry is refused.
    await expect(client.retryDeadLetter(id)).rejects.toMatchObject({ code: "E_NOT_DEAD" });
  });

  it("starts it afresh with --fresh, as a new job whose steps all run again", { timeout: 60_000 }, async () => {
    const id = await enqueueFlaky("fresh", { failures: 3, stepOptions: { retry: { attempts: 1 } } });
    await reaches(id, "dead");
    const cli = await runCli(["retry", id, "--fresh", "--json"], { NATS_URL: env.nats.url });
    expect(cli).toMatchObject({ code: 0, stderr: "" });
    const retried = JSON.parse(cli.stdout) as { id: string; newId: string; resumed?: boolean };
    expect(retried).toMatchObject({ id, function: "flaky-steps" });
    expect(retried?.newId).not.toBe(id);
    expect(retried?.resumed).toBeUndefined();
    await reaches(retried?.newId as string, "dead");
    expect(await runs("fresh")).toEqual(["first", "flaky 1", "first", "flaky 1"]);
  });
});

describe("a step's options", () => {
  it.each([
    [{ timeout: "1s" }, "takes { retry }, not timeout (a step runs within its function's timeout)"],
    [{ retry: { attempts: 0 } }, "retry.attempts must be an integer from 1 to 1000, got 0"],
    ["three times", "options is an object, got 11 characters"],
  ])("refuses %j with E_STEP_INVALID", async (stepOptions, message) => {
    const input = { name: "options", runsFile: path.join(runsDir, "options"), stepOptions };
    await expect(client.call("flaky-steps" as never, input as never)).rejects.toMatchObject({
      code: "E_STEP_INVALID",
      message: expect.stringContaining(message),
    });
  });
});
