import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type CliProcess, runCli, spawnCli } from "../helpers/cli";
import { createTestEnvironment, FIXTURE_FUNCTIONS, type TestEnvironment } from "../helpers/environment";

let env: TestEnvironment;
let runtime: CliProcess;
let cliEnv: NodeJS.ProcessEnv;

beforeAll(async () => {
  env = await createTestEnvironment();
  await env.database.sql`create table items (id serial primary key, name text not null, attempt int, invocation text)`;
  cliEnv = {
    NATS_URL: env.nats.url,
    DATABASE_URL: env.database.url,
    JETFN_FUNCTIONS: FIXTURE_FUNCTIONS,
    LOG_LEVEL: "info",
  };
  runtime = spawnCli(["start"], cliEnv);
  await runtime.waitFor("Runtime ready");
});

afterAll(async () => {
  await runtime?.stop();
  await env?.close();
});

describe("the jetfn command line", () => {
  it("start logs JSON lines", () => {
    const ready = runtime
      .output()
      .split("\n")
      .find((line) => line.includes("Runtime ready"));
    expect(JSON.parse(ready as string)).toMatchObject({ level: 30, msg: expect.stringContaining("Runtime ready") });
  });

  it("call prints the JSON result and exits 0", async () => {
    const result = await runCli(["call", "add", '{"a": 40, "b": 2}'], cliEnv);
    expect(result).toMatchObject({ code: 0, stderr: "" });
    expect(JSON.parse(result.stdout)).toEqual({ sum: 42 });
  });

  it("call reads the input from standard input with -", async () => {
    const result = await runCli(["call", "add", "-"], cliEnv, { input: '{"a": 1, "b": 1}' });
    expect(JSON.parse(result.stdout)).toEqual({ sum: 2 });
  });

  it("call exits non-zero with a one-line reason on failure", async () => {
    const invalid = await runCli(["call", "add", '{"a": "x", "b": 2}'], cliEnv);
    expect(invalid.code).not.toBe(0);
    expect(invalid.stderr.trim().split("\n")).toHaveLength(1);
    expect(invalid.stderr).toMatch(/^jetfn: E_INPUT_INVALID: input for add is invalid: a: /);
    const unknown = await runCli(["call", "nope", "{}"], cliEnv);
    expect(unknown.stderr).toContain("E_FUNCTION_NOT_FOUND");
    const badJson = await runCli(["call", "add", "{oops"], cliEnv);
    expect(badJson.stderr).toContain("not valid JSON");
  });

  it("enqueue prints the id; status shows the outcome", async () => {
    const enqueued = await runCli(["enqueue", "insert-item", '{"name": "from-cli"}'], cliEnv);
    expect(enqueued.code).toBe(0);
    const id = enqueued.stdout.trim();
    expect(id).toMatch(/^[0-9a-f-]{36}$/);
    let status = await runCli(["status", id, "--json"], cliEnv);
    for (let tries = 0; JSON.parse(status.stdout).status !== "succeeded" && tries < 50; tries++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      status = await runCli(["status", id, "--json"], cliEnv);
    }
    expect(JSON.parse(status.stdout)).toMatchObject({ id, status: "succeeded", result: { inserted: "from-cli" } });
    const readable = await runCli(["status", id], cliEnv);
    expect(readable.stdout).toContain(`${id}  succeeded  insert-item`);
  });

  it("enqueue --wait prints the result, and fails with the job's error when it ends dead", async () => {
    const ok = await runCli(["enqueue", "add", '{"a": 2, "b": 3}', "--wait"], cliEnv);
    expect(ok.code).toBe(0);
    expect(JSON.parse(ok.stdout)).toEqual({ sum: 5 });
    const dead = await runCli(["enqueue", "boom", '{"reason": "cli"}', "--wait"], cliEnv);
    expect(dead.code).not.toBe(0);
    expect(dead.stderr).toContain("boom: cli");
  });

  it("migrate reports that nothing is pending", async () => {
    const result = await runCli(["migrate", "--json"], cliEnv);
    expect(result.code).toBe(0);
    expect(JSON.parse(result.stdout)).toEqual({ applied: [] });
  });

  it("start refuses a database without migrations, naming the fix", async () => {
    const empty = await runCli(["start"], {
      ...cliEnv,
      DATABASE_URL: env.database.url.replace(/\/[^/]+$/, "/postgres"),
    });
    expect(empty.code).not.toBe(0);
    expect(empty.stderr).toContain("run `npx jetfn migrate`");
  });

  it("stops gracefully on SIGTERM", async () => {
    const code = await runtime.stop("SIGTERM");
    expect(code).toBe(0);
    expect(runtime.output()).toContain("Runtime stopped.");
  });
});
