// Entry of a child process: starts one runtime on the given functions folder, measures its start-up,
// idle CPU and memory, prints them as one JSON line and stops. Run by bench/function-scale.ts.
import { startBenchRuntime } from "./jetfn-host";
import { REPORT_PREFIX, type ScaleReport } from "./scale-report";

async function main(): Promise<void> {
  const natsUrl = required("BENCH_NATS_URL");
  const databaseUrl = required("BENCH_DATABASE_URL");
  const functionsDir = required("BENCH_FUNCTIONS_DIR");
  const idleMs = Number(required("BENCH_IDLE_MS"));
  const settleMs = Number(process.env.BENCH_SETTLE_MS ?? "2000");
  const started = performance.now();
  const runtime = await startBenchRuntime({ natsUrl, databaseUrl, functionsDir });
  const startupMs = performance.now() - started;
  await new Promise((resolve) => setTimeout(resolve, settleMs));
  const cpuBefore = process.cpuUsage();
  const wallBefore = performance.now();
  await new Promise((resolve) => setTimeout(resolve, idleMs));
  const cpu = process.cpuUsage(cpuBefore);
  const wallMs = performance.now() - wallBefore;
  const memory = process.memoryUsage();
  const report: ScaleReport = {
    functions: runtime.registry.size,
    startupMs,
    idleCpuPercent: ((cpu.user + cpu.system) / 1000 / wallMs) * 100,
    rssMb: memory.rss / 1_048_576,
    heapUsedMb: memory.heapUsed / 1_048_576,
  };
  process.stdout.write(`${REPORT_PREFIX}${JSON.stringify(report)}\n`);
  await runtime.stop();
}

function required(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    process.stderr.write(`${(error as Error).stack ?? String(error)}\n`);
    process.exit(1);
  },
);
