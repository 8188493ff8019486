import { spawn } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { jetstreamManager } from "@nats-io/jetstream";
import { resolveConfig } from "../runtime/config";
import { createFunctionsFolder, noopFunctionSource, RUNTIME_NODE_FLAGS } from "./jetfn-host";
import type { RoundContext, Scenario, Target } from "./model";
import { REPORT_PREFIX, type ScaleReport } from "./scale-report";
import { rotate } from "./stats";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const CHILD = path.join(HERE, "scale-child.ts");
const CHILD_TIMEOUT_MS = 180_000;

const STARTUP = "start-up (startRuntime)";
const IDLE_CPU = "idle CPU (% of one core)";
const RSS = "resident memory";
const PER_FN_RSS = "per-function memory";
const PER_FN_STARTUP = "per-function start-up";

/** Contender name of one function count. */
function label(count: number): string {
  return `${count} functions`;
}

/** 6. Many functions in one runtime process (a child process, so its CPU and memory are its own). */
export const functionScaleScenario: Scenario = {
  id: "scale",
  title: "6. Scale in functions",
  baselines: {},
  targets: (sizes) => scaleTargets(sizes.scaleCounts),
  async run(context) {
    const counts = context.sizes.scaleCounts;
    const reports = new Map<number, ScaleReport>();
    const database = await context.services.jetfnDatabase("jetfn_scale");
    try {
      for (const count of rotate(counts, context.round)) {
        const report = await measureCount(context, database.url, count);
        reports.set(count, report);
        const contender = label(count);
        context.check(contender, "functions deployed", report.functions === count, `${report.functions} deployed`);
        context.record({ metric: STARTUP, contender, unit: "ms", better: "lower", value: report.startupMs });
        context.record({ metric: IDLE_CPU, contender, unit: "%", better: "lower", value: report.idleCpuPercent });
        context.record({ metric: RSS, contender, unit: "MB", better: "lower", value: report.rssMb });
      }
    } finally {
      await database.drop();
    }
    const fewest = Math.min(...counts);
    const most = Math.max(...counts);
    const low = reports.get(fewest);
    const high = reports.get(most);
    if (low && high && most > fewest) {
      const extra = most - fewest;
      const contender = `${label(most)} vs ${fewest}`;
      context.record({
        metric: PER_FN_RSS,
        contender,
        unit: "KB",
        better: "lower",
        value: ((high.rssMb - low.rssMb) * 1024) / extra,
      });
      context.record({
        metric: PER_FN_STARTUP,
        contender,
        unit: "ms",
        better: "lower",
        value: (high.startupMs - low.startupMs) / extra,
      });
    }
  },
};

/** The scale targets apply to the largest function count of the run. */
export function scaleTargets(counts: readonly number[]): Target[] {
  const contender = label(Math.max(...counts));
  const target = (metric: string, max: number, reason: string): Target => ({
    scenario: "scale",
    metric,
    contender,
    kind: "absolute",
    baselines: [],
    max,
    reason,
  });
  return [
    target(STARTUP, 5_000, "a runtime with 500 functions should restart within seconds"),
    target(IDLE_CPU, 3, "deployed functions that nobody calls should cost next to nothing"),
    target(RSS, 300, "500 functions should fit a small container"),
  ];
}

async function measureCount(context: RoundContext, databaseUrl: string, count: number): Promise<ScaleReport> {
  const prefix = `s${context.round}n${count}`;
  const files: Record<string, string> = {};
  for (let index = 0; index < count; index++) files[`${prefix}-${index}`] = noopFunctionSource(8);
  const folder = await createFunctionsFolder(files);
  try {
    return await runChild({
      BENCH_NATS_URL: context.services.natsUrl,
      BENCH_DATABASE_URL: databaseUrl,
      BENCH_FUNCTIONS_DIR: folder.dir,
      BENCH_IDLE_MS: String(context.sizes.idleMs),
      BENCH_SETTLE_MS: String(Math.min(2_000, context.sizes.idleMs)),
    });
  } finally {
    await folder.remove();
    await deleteConsumers(context, `${prefix}-`);
  }
}

/** Runs the child with the tsx loader; kills it by its own pid if it overstays. */
function runChild(env: Record<string, string>): Promise<ScaleReport> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...RUNTIME_NODE_FLAGS, "--import", "tsx", CHILD], {
      cwd: path.resolve(HERE, ".."),
      env: { ...process.env, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk: Buffer) => {
      stdout += chunk.toString();
    });
    child.stderr.on("data", (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), CHILD_TIMEOUT_MS);
    child.once("error", reject);
    child.once("exit", (code) => {
      clearTimeout(timer);
      const line = stdout.split("\n").find((text) => text.startsWith(REPORT_PREFIX));
      if (code !== 0 || !line) {
        reject(new Error(`scale child exited with ${code}:\n${stderr.slice(-2_000)}`));
        return;
      }
      resolve(JSON.parse(line.slice(REPORT_PREFIX.length)) as ScaleReport);
    });
  });
}

/** Removes the consumers a child created, so later rounds start from the same server state. */
async function deleteConsumers(context: RoundContext, prefix: string): Promise<void> {
  const nc = await context.services.connectNats("scale-cleanup");
  try {
    const manager = await jetstreamManager(nc);
    const stream = resolveConfig({}).streamName;
    const names: string[] = [];
    for await (const info of manager.consumers.list(stream)) {
      if (info.name.startsWith(prefix)) names.push(info.name);
    }
    for (const name of names) await manager.consumers.delete(stream, name);
  } catch (error) {
    context.log(`could not delete the scale consumers: ${(error as Error).message}`);
  } finally {
    await nc.close();
  }
}
