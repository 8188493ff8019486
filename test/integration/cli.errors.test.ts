import { spawn } from "node:child_process";
import { type AddressInfo, createServer } from "node:net";
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from "vitest";
import { type CliProcess, JETFN_BIN, runCli, spawnCli } from "../helpers/cli";
import { createTestEnvironment, FIXTURE_FUNCTIONS, type TestEnvironment } from "../helpers/environment";

let env: TestEnvironment;
let runtime: CliProcess;
let cliEnv: NodeJS.ProcessEnv;

beforeAll(async () => {
  env = await createTestEnvironment();
  await env.database.sql`create table items (id serial primary key, name text not null, attempt int, invocation text)`;
  cliEnv = { NATS_URL: env.nats.url, DATABASE_URL: env.database.url, JETFN_FUNCTIONS: FIXTURE_FUNCTIONS };
  runtime = spawnCli(["start"], cliEnv, { laterTestsUseIt: true });
  await runtime.waitFor("Runtime ready", 60_000);
}, 90_000);

afterAll(async () => {
  await runtime?.stop();
  await env?.close();
});

/** The documented failure: exit 1 and exactly one line `jetfn: <code>: <reason>` on standard error. */
function expectOneLineFailure(result: { code: number; stderr: string }, code: string): void {
  expect(result.code).toBe(1);
  expect(result.stderr.trimEnd().split("\n")).toHaveLength(1);
  expect(result.stderr).toMatch(new RegExp(`^jetfn: ${code}: `));
}

const ISO_8601 = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;

describe("the CLI's own errors", () => {
  it("invalid JSON and a --timeout that is no duration are input errors", async () => {
    const badJson = await runCli(["call", "add", "{oops"], cliEnv);
    expectOneLineFailure(badJson, "E_INPUT_INVALID");
    expect(badJson.stderr).toContain("not valid JSON");
    const badStdin = await runCli(["enqueue", "add", "-"], cliEnv, { input: "{" });
    expectOneLineFailure(badStdin, "E_INPUT_INVALID");
    const badTimeout = await runCli(["call", "add", '{"a": 1, "b": 2}', "--timeout", "abc"], cliEnv);
    expectOneLineFailure(badTimeout, "E_INPUT_INVALID");
    expect(badTimeout.stderr).toContain('--timeout: "abc" is not a duration');
    const badWait = await runCli(["enqueue", "add", "{}", "--wait", "--timeout", "soon"], cliEnv);
    expectOneLineFailure(badWait, "E_INPUT_INVALID");
  });

  it("unknown flags, commands and missing arguments print one line, not the usage", async () => {
    const flag = await runCli(["dlq", "--nope"], cliEnv);
    expectOneLineFailure(flag, "E_INPUT_INVALID");
    expect(flag.stderr).toContain("unknown option '--nope'");
    expectOneLineFailure(await runCli(["nope"], cliEnv), "E_INPUT_INVALID");
    expectOneLineFailure(await runCli(["status"], cliEnv), "E_INPUT_INVALID");
    const help = await runCli(["call", "--help"], cliEnv);
    expect(help).toMatchObject({ code: 0, stderr: "" });
    expect(help.stdout).toContain("Usage: jetfn call");
  });

  it("a reader that closes standard output early ends the command quietly", async () => {
    // `jetfn call add ... | head -0`: the reader is gone before the result is written.
    const child = spawn(process.execPath, [JETFN_BIN, "call", "add", '{"a": 1, "b": 2}'], {
      env: { ...process.env, ...cliEnv },
      stdio: ["ignore", "pipe", "pipe"],
    });
    child.stdout.destroy();
    let stderr = "";
    child.stderr.on("data", (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    const code = await new Promise<number | null>((resolve) => child.once("close", resolve));
    expect({ code, stderr }).toEqual({ code: 0, stderr: "" });
  });

  it("start refuses to run without DATABASE_URL, and says which database it uses", async () => {
    const missing = await runCli(["start"], { ...cliEnv, DATABASE_URL: "" });
    expectOneLineFailure(missing, "E_CONFIG_INVALID");
    expect(missing.stderr).toContain("DATABASE_URL is not set");
    const url = new URL(env.database.url);
    const using = runtime
      .output()
      .split("\n")
      .find((line) => line.includes("Using the database"));
    expect(JSON.parse(using as string)).toMatchObject({ database: `${url.host}${url.pathname}` });
    if (url.password) expect(using).not.toContain(url.password);
  });

  it("start with a dashboard port that is taken ends with E_CONFIG_INVALID naming it, after draining", {
    timeout: 90_000,
  }, async () => {
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, "127.0.0.1", resolve));
    onTestFinished(() => new Promise<void>((resolve) => taken.close(() => resolve())));
    const { port } = taken.address() as AddressInfo;
    const started = await runCli(["start", "--dashboard", String(port)], cliEnv);
    expectOneLineFailure(started, "E_CONFIG_INVALID");
    expect(started.stderr).toContain(`dashboard port ${port} on 127.0.0.1: listen EADDRINUSE`);
    // The runtime had started serving: it drained before the command ended.
    expect(started.stdout).toContain("Runtime stopped.");
  });

  it("status --json prints ISO 8601 timestamps, like every other command", async () => {
    const enqueued = await runCli(["enqueue", "add", '{"a": 1, "b": 2}', "--wait", "--json"], cliEnv);
    expect(enqueued.code).toBe(0);
    const id = enqueued.stderr.trim();
    const status = await runCli(["status", id, "--json"], cliEnv);
    const view = JSON.parse(status.stdout) as Record<string, string>;
    expect(view.status).toBe("succeeded");
    for (const field of ["enqueuedAt", "startedAt", "finishedAt"]) expect(view[field]).toMatch(ISO_8601);
  });

  it("a handler's stack trace points at the function file's own lines", async () => {
    const failed = await runCli(["enqueue", "boom", '{"reason": "mapped"}', "--wait"], cliEnv);
    expect(failed.code).toBe(1);
    const id = failed.stderr.split("\n")[0] as string;
    const status = JSON.parse((await runCli(["status", id, "--json"], cliEnv)).stdout) as {
      errors: { stack: string }[];
    };
    // boom.ts throws on line 7, column 11.
    expect(status.errors[0]?.stack).toContain(`${FIXTURE_FUNCTIONS}/boom.ts:7:11`);
    const dead = (await runCli(["dlq", "boom", "--json"], cliEnv)).stdout;
    expect(dead).toContain("boom.ts:7:11");
    const letter = JSON.parse(dead.split("\n")[0] as string) as { diedAt: string; enqueuedAt: string };
    expect(letter.diedAt).toMatch(ISO_8601);
    expect(letter.enqueuedAt).toMatch(ISO_8601);
    expect(runtime.output()).toContain("boom.ts:7:11");
  });

  it("status of an id no runtime recorded and the stream does not hold is E_NOT_FOUND", async () => {
    const unknown = await runCli(["status", "no-such-invocation-id"], cliEnv);
    expectOneLineFailure(unknown, "E_NOT_FOUND");
    expectOneLineFailure(await runCli(["status", "no-such-invocation-id", "--json"], cliEnv), "E_NOT_FOUND");
    // --watch would otherwise wait forever for a mistyped id.
    expectOneLineFailure(await runCli(["status", "no-such-invocation-id", "--watch"], cliEnv), "E_NOT_FOUND");
  });

  it("status of a stored job nobody has run yet is pending, and enqueue says nobody serves it", async () => {
    const enqueued = await runCli(["enqueue", "nobody-deploys-this", "{}"], cliEnv);
    expect(enqueued.code).toBe(0);
    const id = enqueued.stdout.trim();
    expect(enqueued.stderr).toBe(
      `jetfn: warning: no running runtime deploys nobody-deploys-this; job ${id} is stored and waits until one does\n`,
    );
    const status = await runCli(["status", id, "--json"], cliEnv);
    expect(status.code).toBe(0);
    expect(JSON.parse(status.stdout)).toMatchObject({ id, status: "pending" });
    const served = await runCli(["enqueue", "add", '{"a": 1, "b": 1}'], cliEnv);
    expect(served).toMatchObject({ code: 0, stderr: "" });
  });
});
