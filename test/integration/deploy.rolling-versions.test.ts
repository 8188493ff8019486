import { mkdtemp, rm, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { type ConsumerInfo, jetstreamManager } from "@nats-io/jetstream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { StartRuntimeOptions } from "../../runtime/runtime";
import { createTestEnvironment, eventually, type TestEnvironment } from "../helpers/environment";

// A rolling deploy: runtimes of an old and a new version of one function run side by side on one
// NATS, sharing the function's durable consumer. The newer definition's settings (ack wait from the
// timeout, max deliveries from the retry policy) must stay in force whichever runtime starts last.

/** Definition of `rolling` in a version: its timeout, attempts and description differ. */
function versionSource(version: string, timeout: string, attempts: number): string {
  return `import { defineFunction, z } from "jetfn";
export default defineFunction({
  input: z.object({}),
  on: "rolled.${version}",
  timeout: "${timeout}",
  retry: { attempts: ${attempts}, backoff: "100ms" },
  description: "${version}",
  async handler() {
    return { version: "${version}" };
  },
});
`;
}

const HOUR_MS = 60 * 60 * 1000;
let env: TestEnvironment;
let oldDir: string;
let newDir: string;

/** A folder holding `rolling.ts` in one version, written (mtime) at `writtenAt`. */
async function versionFolder(source: string, writtenAt: Date): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), "jetfn-rolling-"));
  const file = path.join(dir, "rolling.ts");
  await writeFile(file, source);
  await utimes(file, writtenAt, writtenAt);
  return dir;
}

beforeAll(async () => {
  env = await createTestEnvironment();
  const now = Date.now();
  oldDir = await versionFolder(versionSource("v1", "8s", 2), new Date(now - 2 * HOUR_MS));
  newDir = await versionFolder(versionSource("v2", "4s", 4), new Date(now - HOUR_MS));
});

afterAll(async () => {
  await env?.close();
  await Promise.all([oldDir, newDir].map((dir) => dir && rm(dir, { recursive: true, force: true })));
});

async function consumer(): Promise<ConsumerInfo> {
  const nc = (await env.client()).connection;
  return (await jetstreamManager(nc)).consumers.info("JETFN_JOBS", "rolling");
}

async function listenerConsumer(): Promise<ConsumerInfo> {
  const nc = (await env.client()).connection;
  return (await jetstreamManager(nc)).consumers.info("JETFN_EVENTS", "on-rolling");
}

/** The consumer settings each version maps to. */
const V1 = { description: "v1", ack_wait: 8_000_000_000, max_deliver: 3 };
const V2 = { description: "v2", ack_wait: 4_000_000_000, max_deliver: 5 };
/** The listener consumer's. */
const ON_V1 = { filter_subject: "fn.event.rolled.v1", ack_wait: 8_000_000_000, max_deliver: 3 };
const ON_V2 = { filter_subject: "fn.event.rolled.v2", ack_wait: 4_000_000_000, max_deliver: 5 };

function start(functionsDir: string, options: StartRuntimeOptions = {}) {
  return env.startRuntime({ functionsDir, ...options });
}

describe("two versions of one function running side by side", () => {
  it("the newer definition sets the consumer whichever runtime starts last, and an older one does not undo it", async () => {
    const old = await start(oldDir);
    expect((await consumer()).config).toMatchObject(V1);
    expect((await listenerConsumer()).config).toMatchObject(ON_V1);
    const next = await start(newDir);
    expect((await consumer()).config).toMatchObject(V2);
    expect((await listenerConsumer()).config).toMatchObject(ON_V2);
    // An old runtime started (or restarted by its supervisor) during the deploy keeps the new settings.
    await old.stop();
    const oldAgain = await start(oldDir);
    expect((await consumer()).config).toMatchObject(V2);
    expect((await listenerConsumer()).config).toMatchObject(ON_V2);
    expect(
      oldAgain.logs.lines.some((line) => /A newer definition of rolling sets its consumer/.test(`${line.msg}`)),
    ).toBe(true);
    // Jobs are served by both versions meanwhile.
    const client = await env.client();
    const results = await Promise.all(
      Array.from({ length: 20 }, () => client.enqueueAndWait("rolling", {}, { timeout: "20s" })),
    );
    expect(results.every((result) => ["v1", "v2"].includes((result as { version: string }).version))).toBe(true);
    await Promise.all([next.stop(), oldAgain.stop()]);
  });

  it("an old runtime that creates the lost consumer again creates it with the newer settings", async () => {
    await start(newDir);
    const old = await start(oldDir, { healthCheckInterval: "200ms" });
    expect((await consumer()).config).toMatchObject(V2);
    const nc = (await env.client()).connection;
    const manager = await jetstreamManager(nc);
    // Only the old runtime watches its consumers this often: it notices first and recreates it.
    await manager.consumers.delete("JETFN_JOBS", "rolling");
    const recreated = await eventually(
      () => manager.consumers.info("JETFN_JOBS", "rolling").catch(() => undefined),
      20_000,
    );
    expect(recreated.config).toMatchObject(V2);
    expect(old.logs.lines.some((line) => /its consumer is missing/.test(`${line.msg}`))).toBe(true);
  });
});
