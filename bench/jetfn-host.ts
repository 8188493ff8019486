import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import pino, { type Logger } from "pino";
import { resolveConfig } from "../runtime/config";
import { ensureJobStream } from "../runtime/nats/streams";
import { type Runtime, type StartRuntimeOptions, startRuntime } from "../runtime/runtime";
import { createEmitter, type RuntimeEmitter } from "../runtime/triggers/events";

/** Name of the global a benchmark function stamps when its first invocation starts. */
export const FIRST_START_GLOBAL = "__jetfnBenchFirstStart";

/** Line of function-file code that stamps the first start (the file runs in this process). */
const STAMP_FIRST_START = `(globalThis as Record<string, unknown>).${FIRST_START_GLOBAL} ??= performance.now();`;

/** When the first stamped invocation started (performance.now() of this process), if any. */
export function firstStart(): number | undefined {
  return (globalThis as Record<string, unknown>)[FIRST_START_GLOBAL] as number | undefined;
}

/** Forgets the first-start stamp before a new drain. */
export function resetFirstStart(): void {
  delete (globalThis as Record<string, unknown>)[FIRST_START_GLOBAL];
}

/** Source of a function that does nothing (besides the stamp). */
export function noopFunctionSource(concurrency: number): string {
  return `import { defineFunction, z } from "jetfn";

export default defineFunction({
  input: z.object({ key: z.string(), n: z.number() }).partial(),
  concurrency: ${concurrency},
  async handler() {
    ${STAMP_FIRST_START}
    return null;
  },
});
`;
}

/** Source of a function that inserts one row into the (audited) `bench_rows` table, or into `table`. */
export function insertFunctionSource(concurrency: number, table = "bench_rows"): string {
  return `import { sql } from "drizzle-orm";
import { defineFunction, z } from "jetfn";

export default defineFunction({
  input: z.object({ key: z.string(), n: z.number() }),
  concurrency: ${concurrency},
  async handler({ key, n }, ctx) {
    ${STAMP_FIRST_START}
    await ctx.db.execute(sql\`insert into ${table} (job_key, n) values (\${key}, \${n})\`);
    return null;
  },
});
`;
}

/** Source of a function answering with a version number (hot deploy). */
export function versionedFunctionSource(version: number): string {
  return `import { defineFunction, z } from "jetfn";

export default defineFunction({
  input: z.object({}).passthrough(),
  async handler() {
    return { version: ${version} };
  },
});
`;
}

/** A temporary functions folder. */
export interface FunctionsFolder {
  readonly dir: string;
  write(name: string, source: string): Promise<string>;
  remove(): Promise<void>;
}

/** Creates a temporary functions folder holding `files` (name -> source). */
export async function createFunctionsFolder(files: Record<string, string> = {}): Promise<FunctionsFolder> {
  const dir = await mkdtemp(path.join(tmpdir(), "jetfn-bench-fns-"));
  const write = async (name: string, source: string): Promise<string> => {
    const file = path.join(dir, `${name}.ts`);
    await writeFile(file, source);
    return file;
  };
  for (const [name, source] of Object.entries(files)) await write(name, source);
  return { dir, write, remove: () => rm(dir, { recursive: true, force: true }) };
}

/** A logger for runtimes under test: warnings and errors only, to stderr. */
export function benchLogger(): Logger {
  return pino({ level: process.env.JETFN_BENCH_LOG_LEVEL ?? "warn" }, pino.destination(2));
}

/** The Node flags `bin/jetfn.mjs` starts a runtime with (its shebang line), so a child process stands in for one. */
export const RUNTIME_NODE_FLAGS = ["--max-semi-space-size=64"];

/** Starts a jetfn runtime in this process with the benchmark's settings. */
export function startBenchRuntime(
  options: StartRuntimeOptions & { natsUrl: string; databaseUrl: string; functionsDir: string },
): Promise<Runtime> {
  // migrate: migrations added to the repository after the template was made are applied too.
  // productionChecks: the bench's nats-server is whatever the machine runs; its warnings are noise here.
  return startRuntime({
    logger: benchLogger(),
    shutdownGrace: "10s",
    migrate: true,
    productionChecks: false,
    ...options,
  });
}

/** Creates the jobs stream the way a runtime does, so jobs can be enqueued before one starts. */
export async function ensureBenchJobStream(nc: NatsConnection): Promise<void> {
  const config = resolveConfig({});
  await ensureJobStream(await jetstreamManager(nc), {
    name: config.streamName,
    retentionMs: config.jobRetentionMs,
    duplicateWindowMs: config.duplicateWindowMs,
    replication: config.replication,
  });
}

/** Counts jobs whose outcome is recorded (each runtime's `job:done` event, sent with its done notice). */
export interface DoneCounter {
  readonly count: number;
  /** performance.now() of the latest one. */
  readonly lastAt: number;
  /** The emitter to give the runtime, so no job finishes unseen. */
  readonly events: RuntimeEmitter;
}

/**
 * Listens for finished jobs in this process, the way the peers' drains count their workers'
 * completion events (not through a NATS subscription, whose deliveries would load this process).
 */
export function countDoneJobs(): DoneCounter {
  const events = createEmitter();
  let count = 0;
  let lastAt = 0;
  events.on("job:done", () => {
    count++;
    lastAt = performance.now();
  });
  return {
    events,
    get count() {
      return count;
    },
    get lastAt() {
      return lastAt;
    },
  };
}
