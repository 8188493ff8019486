import { mkdtemp, rm, unlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Runtime } from "../../runtime/runtime";
import type { JetfnClient } from "../../runtime/sdk/client";
import { createTestEnvironment, eventually, type TestEnvironment } from "../helpers/environment";
import type { CapturedLogger } from "../helpers/logs";

// Deploy, redeploy and undeploy of an isolated function: each version has its own worker threads,
// in-flight invocations finish on theirs, and the threads of a version no longer deployed end.

let env: TestEnvironment;
let client: JetfnClient;
let runtime: Runtime & { logs: CapturedLogger };
let dir: string;

function versionSource(version: string): string {
  return `import { threadId } from "node:worker_threads";
import { defineFunction, z } from "jetfn";
export default defineFunction({
  input: z.object({ delayMs: z.number().default(0) }),
  isolation: "thread",
  concurrency: 2,
  async handler({ delayMs }) {
    await new Promise((resolve) => setTimeout(resolve, delayMs));
    return { version: "${version}", threadId };
  },
});
`;
}

type Answer = { version: string; threadId: number };

/** Thread ids that started and ended, from the runtime's debug lines. */
function threadLog(version?: number): { started: number[]; ended: number[] } {
  const of = (msg: string) =>
    runtime.logs
      .matching(msg)
      .filter((line) => line.fn === "versioned" && (version === undefined || line.version === version))
      .map((line) => line.threadId as number);
  return { started: of("Worker thread started."), ended: of("Worker thread ended.") };
}

beforeAll(async () => {
  env = await createTestEnvironment();
  dir = await mkdtemp(path.join(tmpdir(), "jetfn-isolated-"));
  await writeFile(path.join(dir, "versioned.ts"), versionSource("v1"));
  runtime = await env.startRuntime({ functionsDir: dir, watch: true });
  client = await env.client();
}, 60_000);

afterAll(async () => {
  await env?.close();
  await rm(dir, { recursive: true, force: true });
});

describe("redeploying an isolated function", () => {
  it("replaces its worker threads; an invocation in flight finishes on the old version first", async () => {
    const first = (await client.call("versioned", {})) as Answer;
    expect(first.version).toBe("v1");
    const v1 = runtime.registry.get("versioned")?.version as number;
    const slow = client.call("versioned", { delayMs: 1_500 }, { timeout: "10s" }) as Promise<Answer>;
    await new Promise((resolve) => setTimeout(resolve, 300));
    await writeFile(path.join(dir, "versioned.ts"), versionSource("v2"));
    // The registry shows v2 a moment before the runtime serves it; wait for the runtime.
    const second = await eventually(async () => {
      const answer = (await client.call("versioned", {})) as Answer;
      return answer.version === "v2" ? answer : undefined;
    });
    expect(second.threadId).not.toBe(first.threadId);
    // The v1 thread still busy with the slow call is not terminated under it.
    expect((await slow).version).toBe("v1");
    const old = await eventually(() => {
      const log = threadLog(v1);
      return log.started.length > 0 && log.ended.length === log.started.length ? log : undefined;
    });
    expect(old.started).toContain(first.threadId);
  });

  it("ends every thread when the function is undeployed", async () => {
    await unlink(path.join(dir, "versioned.ts"));
    await eventually(() => runtime.registry.get("versioned") === undefined);
    const log = await eventually(() => {
      const all = threadLog();
      return all.ended.length === all.started.length ? all : undefined;
    });
    expect(log.started.length).toBeGreaterThanOrEqual(2);
  });
});
