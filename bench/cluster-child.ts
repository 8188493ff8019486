// Entry of a child process: one runtime of the cluster scenario (bench/cluster-scale.ts). It starts a
// runtime on the cluster, watching a functions folder that is still empty, reports that it is ready,
// then reports the jobs it finishes over its IPC channel (when its count changed, at most every
// 50 ms). The harness writes a function file once every runtime is ready and the queue is full, so
// start-up stays out of the drain; a phase message (after the warm-up drain) starts the count anew.
// SIGTERM, or the harness going away, stops the runtime and the process.
import { isPhaseMessage, type ProgressMessage } from "./cluster-messages";
import { countDoneJobs, firstStart, resetFirstStart, startBenchRuntime } from "./jetfn-host";

const REPORT_EVERY_MS = 50;

async function main(): Promise<void> {
  const done = countDoneJobs();
  const runtime = await startBenchRuntime({
    natsUrl: required("BENCH_NATS_URL"),
    databaseUrl: required("BENCH_DATABASE_URL"),
    functionsDir: required("BENCH_FUNCTIONS_DIR"),
    replicas: Number(required("BENCH_REPLICAS")),
    watch: true,
    events: done.events,
  });
  let phase = 0;
  let doneBefore = 0;
  let reported: string | undefined;
  const report = (): void => {
    const count = done.count - doneBefore;
    const first = firstStart();
    const message: ProgressMessage = {
      type: "progress",
      phase,
      done: count,
      // performance.now() counts from each process's own start; timeOrigin makes it epoch time.
      firstStartAt: first === undefined ? undefined : performance.timeOrigin + first,
      lastDoneAt: count > 0 ? performance.timeOrigin + done.lastAt : undefined,
    };
    const key = `${phase}/${count}`;
    if (key === reported) return;
    reported = key;
    if (process.connected) process.send?.(message);
  };
  process.on("message", (message) => {
    if (!isPhaseMessage(message)) return;
    phase = message.phase;
    doneBefore = done.count;
    resetFirstStart();
    report();
  });
  report();
  const timer = setInterval(report, REPORT_EVERY_MS);
  await new Promise((resolve) => {
    process.once("SIGTERM", resolve);
    process.once("disconnect", resolve);
  });
  clearInterval(timer);
  await runtime.stop();
  report();
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
