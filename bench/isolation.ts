// What `isolation: "thread"` costs: per-call and per-job latency against the same function run on
// the event loop, worker thread start time and memory per thread.
//   npx tsx bench/isolation.ts [count]      (default 500 sequential invocations per variant)
import path from "node:path";
import { fileURLToPath } from "node:url";
import { compiledSourceOf, loadFunctionFile } from "../runtime/deploy/loader";
import { startHandlerThread } from "../runtime/isolation/handler-thread-host";
import { createIsolation } from "../runtime/isolation/isolation";
import { handlerThreadScript } from "../runtime/isolation/thread-script";
import { resolveFunction } from "../runtime/sdk/define-function";
import { DEFAULT_LOG_LIMITS } from "../runtime/support/log-budget";
import { createLogger } from "../runtime/support/logger";
import { startTestHarness } from "../runtime/testing";

const FUNCTIONS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../test/fixtures/isolated-functions");
const COUNT = Number(process.argv[2] ?? 500);

function percentiles(samples: number[]): { p50: number; p99: number; mean: number } {
  const sorted = [...samples].sort((a, b) => a - b);
  const at = (q: number) =>
    Math.round((sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0) * 100) / 100;
  const mean = Math.round((sorted.reduce((sum, value) => sum + value, 0) / sorted.length) * 100) / 100;
  return { p50: at(0.5), p99: at(0.99), mean };
}

async function time(run: () => Promise<unknown>, count: number, warmed: () => void): Promise<number[]> {
  for (let warm = 0; warm < 20; warm++) await run();
  warmed();
  const samples: number[] = [];
  for (let index = 0; index < count; index++) {
    const started = performance.now();
    await run();
    samples.push(performance.now() - started);
  }
  return samples;
}

async function latencies(): Promise<void> {
  const harness = await startTestHarness({ functionsDir: FUNCTIONS });
  try {
    await harness.database.sql`
      create table fault_rows (id bigserial primary key, n int not null, invocation text not null, attempt int not null)`;
    await harness.database
      .sql`create table items (id serial primary key, name text not null, attempt int, invocation text)`;
    const durations = new Map<string, number[]>();
    harness.runtime.events.on("invocation:success", (event) => {
      durations.set(event.fn, [...(durations.get(event.fn) ?? []), event.durationMs]);
    });
    const { client } = harness;
    for (const fn of ["add", "add-isolated"]) {
      const samples = await time(
        () => client.call(fn as never, { a: 1, b: 2 } as never),
        COUNT,
        () => durations.delete(fn),
      );
      report(`call ${fn}`, { roundTripMs: percentiles(samples), inRuntimeMs: percentiles(durations.get(fn) ?? []) });
    }
    for (const fn of ["fault-insert", "fault-insert-isolated"]) {
      let n = 0;
      const samples = await time(
        () => client.enqueueAndWait(fn as never, { n: n++ } as never),
        COUNT,
        () => durations.delete(fn),
      );
      report(`job ${fn}`, { roundTripMs: percentiles(samples), inRuntimeMs: percentiles(durations.get(fn) ?? []) });
    }
  } finally {
    await harness.close();
  }
}

/** Starts threads of add-isolated one by one, then measures the RSS they added (after GC). */
async function threads(count: number): Promise<void> {
  const loaded = await loadFunctionFile(path.join(FUNCTIONS, "add-isolated.ts"));
  if (!loaded.ok) throw loaded.error;
  const fn = resolveFunction("add-isolated", loaded.file, 1, loaded.definition);
  const isolation = createIsolation({ logger: createLogger({ level: "warn" }) });
  const prepared = isolation.prepare(fn);
  await new Promise((resolve) => setTimeout(resolve, 3_000)); // the warm thread and the script build
  const gc = (globalThis as { gc?: () => void }).gc;
  gc?.();
  const before = process.memoryUsage().rss;
  const startMs: number[] = [];
  const ctx = {
    signal: new AbortController().signal,
    log: createLogger({ level: "warn" }),
    invocationId: "x",
    attempt: 1,
  };
  // Invocations at once force the pool to grow to `count` threads.
  const started = performance.now();
  await Promise.all(
    Array.from({ length: count }, async () => {
      await prepared.definition.spec.handler({ a: 1, b: 2 }, ctx as never);
      startMs.push(performance.now() - started);
    }),
  );
  gc?.();
  await new Promise((resolve) => setTimeout(resolve, 500));
  const added = process.memoryUsage().rss - before;
  report("threads", {
    threads: isolation.threads("add-isolated"),
    allReadyMs: Math.round(performance.now() - started),
    firstReadyMs: Math.round(Math.min(...startMs)),
    rssPerThreadMb: Math.round(((added / (isolation.threads("add-isolated") - 1)) * 10) / 1e6) / 10,
  });
  await isolation.close();
  // One thread at a time, on an otherwise idle runtime: what a pool pays to grow by one.
  const script = await handlerThreadScript();
  const single: number[] = [];
  for (let index = 0; index < 5; index++) {
    const begun = performance.now();
    const thread = startHandlerThread({
      script,
      data: {
        file: loaded.file,
        functionName: fn.name,
        source: compiledSourceOf(loaded.definition) as string,
        logLimits: DEFAULT_LOG_LIMITS,
      },
      logger: createLogger({ level: "warn" }),
      abortGraceMs: 500,
      onExit: () => {},
    });
    await thread.ready;
    single.push(performance.now() - begun);
    await thread.terminate();
  }
  report("thread start, one at a time", { ms: single.map(Math.round) });
}

function report(what: string, figures: Record<string, unknown>): void {
  process.stdout.write(`[isolation] ${what} ${JSON.stringify(figures)}\n`);
}

await latencies();
await threads(8);
process.exit(0);
