import { copyFile, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, expect, it, onTestFinished } from "vitest";
import { type CliProcess, spawnCli } from "../helpers/cli";
import { createTestEnvironment, FIXTURE_FUNCTIONS, type TestEnvironment } from "../helpers/environment";

// A function file whose top level never finishes (`while (true) {}`) used to hold the runtime in its
// load forever: never ready, nothing logged, one core busy; saved while `jetfn dev` ran, it froze a
// running runtime. Now loading a file has a time limit (JETFN_LOAD_TIMEOUT): that file alone is
// refused with one log line, and the others deploy and answer. The runtimes run as processes, so
// a frozen one fails the test instead of freezing it.
const FIXTURES = path.resolve(FIXTURE_FUNCTIONS, "../endless-load");
const LOADING_STOPPED = "did not finish loading within";
let env: TestEnvironment;

beforeAll(async () => {
  env = await createTestEnvironment();
});

afterAll(async () => {
  await env?.close();
});

/** A folder of function files holding copies of the named fixtures. */
async function functionsFolder(...names: string[]): Promise<string> {
  const folder = await mkdtemp(path.join(tmpdir(), "jetfn-endless-"));
  onTestFinished(() => rm(folder, { recursive: true, force: true }));
  for (const name of names) await copyFile(path.join(FIXTURES, name), path.join(folder, name));
  return folder;
}

/** Starts `jetfn <command>` on `folder`; a frozen runtime ignores SIGTERM, so it is killed at the end. */
function runtimeOn(command: "start" | "dev", folder: string): CliProcess {
  const runtime = spawnCli(
    [command],
    {
      NATS_URL: env.nats.url,
      DATABASE_URL: env.database.url,
      JETFN_FUNCTIONS: folder,
      JETFN_LOAD_TIMEOUT: "1s",
    },
    { cwd: folder, laterTestsUseIt: true },
  );
  onTestFinished(async () => {
    await runtime.stop("SIGKILL");
  });
  return runtime;
}

function linesMentioning(runtime: CliProcess, text: string): string[] {
  return runtime
    .output()
    .split("\n")
    .filter((line) => line.includes(text));
}

it("refuses a file that never finishes loading, with one line, and deploys the others", {
  timeout: 90_000,
}, async () => {
  const runtime = runtimeOn("start", await functionsFolder("endless.ts", "ping.ts"));
  await runtime.waitFor("Runtime ready", 45_000);
  const client = await env.client();
  await expect(client.call("ping", {})).resolves.toEqual({ pong: true });
  const refused = linesMentioning(runtime, LOADING_STOPPED);
  expect(refused).toHaveLength(1);
  expect(JSON.parse(refused[0] as string)).toMatchObject({ code: "E_FUNCTION_LOAD_FAILED", level: 50 });
  await expect(client.call("endless", {}, { timeout: "5s" })).rejects.toMatchObject({ code: "E_FUNCTION_NOT_FOUND" });
});

it("keeps a running `jetfn dev` answering when a file that never finishes loading is saved", {
  timeout: 90_000,
}, async () => {
  const folder = await functionsFolder("ping.ts");
  const runtime = runtimeOn("dev", folder);
  await runtime.waitFor("Runtime ready", 45_000);
  const client = await env.client();
  await expect(client.call("ping", {})).resolves.toEqual({ pong: true });
  await copyFile(path.join(FIXTURES, "endless.ts"), path.join(folder, "endless.ts"));
  await runtime.waitFor(LOADING_STOPPED, 30_000);
  await expect(client.call("ping", {}, { timeout: "5s" })).resolves.toEqual({ pong: true });
  expect(linesMentioning(runtime, LOADING_STOPPED)).toHaveLength(1);
});
