import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { FunctionStatsLine } from "../../runtime/cli/stats";
import type { DeadLetter } from "../../runtime/db/dead-letters";
import type { FunctionOverview } from "../../runtime/inspect/function-overview";
import type { JetfnClient } from "../../runtime/sdk/client";
import { type CliProcess, runCli, spawnCli } from "../helpers/cli";
import { createTestEnvironment, eventually, FIXTURE_FUNCTIONS, type TestEnvironment } from "../helpers/environment";

let env: TestEnvironment;
let client: JetfnClient;
let cliEnv: NodeJS.ProcessEnv;
const runtimes: CliProcess[] = [];

beforeAll(async () => {
  env = await createTestEnvironment();
  await env.database.sql`create table items (id serial primary key, name text not null, attempt int, invocation text)`;
  cliEnv = { NATS_URL: env.nats.url, DATABASE_URL: env.database.url, JETFN_FUNCTIONS: FIXTURE_FUNCTIONS };
  runtimes.push(spawnCli(["start"], cliEnv), spawnCli(["start"], cliEnv));
  await Promise.all(runtimes.map((runtime) => runtime.waitFor("Runtime ready")));
  client = await env.client();
}, 90_000);

afterAll(async () => {
  await Promise.allSettled(runtimes.map((runtime) => runtime.stop()));
  await env?.close();
});

function jsonLines<T>(stdout: string): T[] {
  return stdout
    .split("\n")
    .filter(Boolean)
    .map((line) => JSON.parse(line) as T);
}

async function deadLetters(fn?: string): Promise<DeadLetter[]> {
  const result = await runCli(["dlq", ...(fn ? [fn] : []), "--json"], cliEnv);
  expect(result).toMatchObject({ code: 0, stderr: "" });
  return jsonLines<DeadLetter>(result.stdout);
}

async function invocation(id: string) {
  const [row] = await env.database.sql<
    {
      status: string;
      retry_of: string | null;
      retried_as: string | null;
      retried_at: Date | null;
      dropped_at: Date | null;
      input: unknown;
    }[]
  >`select status, retry_of, retried_as, retried_at, dropped_at, input from jetfn.invocations where id = ${id}`;
  return row;
}

describe("ls and stats across two runtime processes", () => {
  it("ls shows one row per function, adding up both runtimes", async () => {
    for (let i = 0; i < 20; i++) await client.call("add", { a: i, b: 1 });
    const started = performance.now();
    const result = await runCli(["ls", "--json"], cliEnv);
    const elapsedMs = performance.now() - started;
    expect(result).toMatchObject({ code: 0, stderr: "" });
    const rows = jsonLines<FunctionOverview>(result.stdout);
    const add = rows.find((row) => row.function === "add");
    expect(add).toMatchObject({ instances: 2, served: 20, calls: 20, queued: 0, ackPending: 0, drainMs: 0 });
    expect(add?.memoryBytes).toBeGreaterThan(2 * 10_000_000);
    expect(add?.uptimeMs).toBeGreaterThan(0);
    expect(add?.ratePerSecond).toBeGreaterThan(0);
    expect(rows.map((row) => row.function)).toContain("boom");
    // A whole CLI process: start-up, connect, gather for the stall window, print.
    expect(elapsedMs).toBeLessThan(10_000);
    const table = await runCli(["ls"], cliEnv);
    expect(table.stdout).toMatch(/^FUNCTION\s+INSTANCES\s+UPTIME\s+SERVED/);
    expect(table.stdout).toMatch(/\nadd\s+2\s+/);
    expect(table.stdout).toContain("2 runtimes answered");
  });

  it("ls --watch refreshes", async () => {
    const watching = spawnCli(["ls", "--watch", "--json"], cliEnv);
    await eventually(() => watching.output().split('"function":"add"').length > 2, 15_000);
    await watching.stop("SIGINT");
  });

  it("stats [fn] reports count, durations and errors by kind across runtimes", async () => {
    for (let i = 0; i < 3; i++) {
      await expect(client.call("add", { a: "x", b: 1 })).rejects.toMatchObject({ code: "E_INPUT_INVALID" });
    }
    const result = await runCli(["stats", "add", "--json"], cliEnv);
    expect(result).toMatchObject({ code: 0, stderr: "" });
    const [add, ...others] = jsonLines<FunctionStatsLine>(result.stdout);
    expect(others).toEqual([]);
    expect(add).toMatchObject({
      function: "add",
      instances: 2,
      count: 23,
      errors: { total: 3, invalid_input: 3, handler_error: 0, timeout: 0, non_retryable: 0 },
    });
    expect(add?.duration_ms.mean).toBeGreaterThan(0);
    expect(add?.duration_ms.median).toBeGreaterThan(0);
    expect(add?.duration_ms.p99).toBeGreaterThanOrEqual(add?.duration_ms.median ?? 0);
    const table = await runCli(["stats"], cliEnv);
    expect(table.stdout).toMatch(/^FUNCTION\s+COUNT\s+MEAN\s+MEDIAN\s+P99\s+ERRORS/);
    expect(table.stdout).toMatch(/\nadd\s+23\s+/);
  });
});

describe("dead letters", () => {
  let poisonId: string;
  let retryId: string;

  it("a poison job appears in dlq after its attempts", async () => {
    poisonId = (await client.enqueue("flaky", { name: "poison", failTimes: 99 })).id;
    const [dead] = await eventually(async () => {
      const listed = await deadLetters("flaky");
      return listed.length > 0 ? listed : undefined;
    }, 20_000);
    expect(dead).toMatchObject({
      id: poisonId,
      function: "flaky",
      attempts: 4,
      error: { code: "E_HANDLER_FAILED", message: "attempt 4 fails on purpose" },
    });
    expect(Date.parse(dead?.diedAt ?? "")).toBeGreaterThan(Date.now() - 60_000);
    const table = await runCli(["dlq"], cliEnv);
    expect(table.stdout).toMatch(new RegExp(`${poisonId}\\s+flaky\\s+4\\s+`));
  });

  it("retry runs it again as a new job linked to the original", async () => {
    const result = await runCli(["retry", poisonId, "--json"], cliEnv);
    expect(result).toMatchObject({ code: 0, stderr: "" });
    const [retried] = jsonLines<{ id: string; newId: string; function: string }>(result.stdout);
    expect(retried).toMatchObject({ id: poisonId, function: "flaky" });
    retryId = retried?.newId as string;
    expect(retryId).not.toBe(poisonId);
    expect(await invocation(poisonId)).toMatchObject({
      status: "dead",
      retried_as: retryId,
      retried_at: expect.any(Object),
    });
    // It runs again: its attempts write rows under the new id, with the same input.
    await eventually(async () => (await invocation(retryId))?.status === "dead", 20_000);
    expect(await invocation(retryId)).toMatchObject({ retry_of: poisonId, input: { name: "poison", failTimes: 99 } });
    const rerun = await client.status(retryId);
    expect(rerun.errors?.map((error) => (error as { message: string }).message)).toEqual(
      [1, 2, 3, 4].map((attempt) => `attempt ${attempt} fails on purpose`),
    );
    const listed = (await deadLetters()).map((entry) => entry.id);
    expect(listed).toContain(retryId);
    expect(listed).not.toContain(poisonId);
    expect(await client.status(poisonId)).toMatchObject({ status: "dead", retriedAs: retryId });
    expect((await runCli(["status", poisonId], cliEnv)).stdout).toContain(`retried as: ${retryId}`);
  });

  it("retrying a job that is not dead is refused with a clear message", async () => {
    const again = await runCli(["retry", poisonId], cliEnv);
    expect(again.code).not.toBe(0);
    expect(again.stderr).toBe(
      `jetfn: E_NOT_DEAD: job ${poisonId} was already retried as ${retryId}; it cannot be retried\n`,
    );
    const job = await client.enqueue("add", { a: 1, b: 1 });
    await client.result(job.id);
    const succeeded = await runCli(["retry", job.id], cliEnv);
    expect(succeeded.stderr).toBe(
      `jetfn: E_NOT_DEAD: job ${job.id} is succeeded, not dead; only dead jobs can be retried\n`,
    );
    const unknown = await runCli(["retry", "no-such-job-id"], cliEnv);
    expect(unknown.stderr).toMatch(/^jetfn: E_NOT_FOUND: no job with id no-such-job-id/);
    const neither = await runCli(["retry"], cliEnv);
    expect(neither.stderr).toContain("give either a dead job's id, or --function <fn> --all");
  });

  it("dlq drop discards a dead job, recorded with when", async () => {
    const result = await runCli(["dlq", "drop", retryId], cliEnv);
    expect(result).toMatchObject({ code: 0, stderr: "" });
    expect(result.stdout).toMatch(new RegExp(`^dropped ${retryId} at \\d{4}-`));
    expect(await invocation(retryId)).toMatchObject({ status: "dropped", dropped_at: expect.any(Object) });
    expect((await deadLetters()).map((entry) => entry.id)).not.toContain(retryId);
    const again = await runCli(["dlq", "drop", retryId], cliEnv);
    expect(again.stderr).toMatch(
      new RegExp(`^jetfn: E_NOT_DEAD: job ${retryId} was dropped at .*; it cannot be dropped\\n$`),
    );
    expect((await runCli(["retry", retryId], cliEnv)).stderr).toContain("E_NOT_DEAD");
  });

  it("retry --function <fn> --all retries every dead job of that function", async () => {
    const ids = await Promise.all(["one", "two"].map(async (reason) => (await client.enqueue("boom", { reason })).id));
    await eventually(async () => (await deadLetters("boom")).length === 2, 15_000);
    const result = await runCli(["retry", "--function", "boom", "--all", "--json"], cliEnv);
    expect(result).toMatchObject({ code: 0, stderr: "" });
    const retried = jsonLines<{ id: string; newId: string }>(result.stdout);
    expect(retried.map((entry) => entry.id).sort()).toEqual([...ids].sort());
    // The new jobs fail again and are the only dead letters of boom left.
    await eventually(async () => (await deadLetters("boom")).length === 2, 15_000);
    expect((await deadLetters("boom")).map((entry) => entry.id).sort()).toEqual(
      retried.map((entry) => entry.newId).sort(),
    );
    const linked = await env.database
      .sql`select retry_of from jetfn.invocations where id in ${env.database.sql(retried.map((entry) => entry.newId))}`;
    expect(linked.map((row) => row.retry_of).sort()).toEqual([...ids].sort());
  });

  it("the stats count the dead jobs and retries", async () => {
    const result = await runCli(["stats", "flaky", "--json"], cliEnv);
    const [flaky] = jsonLines<FunctionStatsLine>(result.stdout);
    expect(flaky).toMatchObject({ count: 8, retries: 6, dead: 2, errors: { handler_error: 8 } });
  });
});
