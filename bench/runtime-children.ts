import { type ChildProcess, spawn } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { stopChild } from "../runtime/support/stop-child";
import { isProgressMessage, type PhaseMessage, type ProgressMessage } from "./cluster-messages";
import { readProcessCpu } from "./cpu-use";
import { RUNTIME_NODE_FLAGS } from "./jetfn-host";
import { waitUntil } from "./stats";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const CHILD = path.join(HERE, "cluster-child.ts");
const READY_TIMEOUT_MS = 120_000;
const PHASE_TIMEOUT_MS = 10_000;
/** Longer than the runtime's own shutdown grace (10 s, jetfn-host.ts). */
const STOP_GRACE_MS = 15_000;

/** Where the runtimes connect, and what they run. */
export interface RuntimeChildrenOptions {
  natsUrl: string;
  databaseUrl: string;
  functionsDir: string;
  replicas: number;
}

/** Runtimes in child processes of their own (bench/cluster-child.ts), each ready and watching its folder. */
export interface RuntimeChildren {
  /** Jobs finished by all of them in the current phase (as last reported). */
  readonly done: number;
  /** Their CPU time so far, summed (ms); undefined where /proc is missing. */
  cpuMs(): Promise<number | undefined>;
  /** Waits until they have finished `count` jobs in this phase; ms from the first one's start to the last one's end. */
  drain(count: number, timeoutMs: number): Promise<number>;
  /** Starts a new phase in every runtime (its count of done jobs and first start anew); resolves once each reports it. */
  nextPhase(): Promise<void>;
  /** SIGTERM to each one's own pid, waiting for its graceful stop (SIGKILL after a grace). */
  stop(): Promise<void>;
}

/**
 * Starts `count` runtimes in child processes: the first alone, so it creates the streams and buckets
 * the others then find, the rest together. Resolves once every one is ready.
 */
export async function startRuntimeChildren(count: number, options: RuntimeChildrenOptions): Promise<RuntimeChildren> {
  const first = await startChild(options);
  const rest = await Promise.allSettled(Array.from({ length: count - 1 }, () => startChild(options)));
  const children = [first, ...rest.flatMap((result) => (result.status === "fulfilled" ? [result.value] : []))];
  const failed = rest.find((result) => result.status === "rejected");
  if (failed) {
    await new Children(children).stop();
    throw failed.reason;
  }
  return new Children(children);
}

interface Child {
  process: ChildProcess;
  pid: number;
  progress: ProgressMessage;
  /** The last characters it wrote to stderr, for the error when it fails. */
  stderr(): string;
}

class Children implements RuntimeChildren {
  readonly #children: Child[];
  #phase = 0;

  constructor(children: Child[]) {
    this.#children = children;
  }

  get done(): number {
    return this.#current().reduce((sum, child) => sum + child.progress.done, 0);
  }

  async cpuMs(): Promise<number | undefined> {
    const readings = await Promise.all(this.#children.map((child) => readProcessCpu(child.pid)));
    if (readings.some((ms) => ms === undefined)) return undefined;
    return readings.reduce((sum: number, ms) => sum + (ms as number), 0);
  }

  async drain(count: number, timeoutMs: number): Promise<number> {
    await this.#waitFor(
      () => this.done >= count,
      `${count} jobs done by ${this.#children.length} runtime(s)`,
      timeoutMs,
    );
    const firsts = this.#current().map((child) => child.progress.firstStartAt ?? Number.POSITIVE_INFINITY);
    const lasts = this.#current().map((child) => child.progress.lastDoneAt ?? Number.NEGATIVE_INFINITY);
    return Math.max(...lasts) - Math.min(...firsts);
  }

  async nextPhase(): Promise<void> {
    this.#phase++;
    const message: PhaseMessage = { type: "phase", phase: this.#phase };
    for (const child of this.#children) child.process.send(message);
    await this.#waitFor(
      () => this.#current().length === this.#children.length,
      "the runtimes' new phase",
      PHASE_TIMEOUT_MS,
    );
  }

  async stop(): Promise<void> {
    await Promise.allSettled(this.#children.map((child) => stopChild(child.process, STOP_GRACE_MS)));
  }

  /** The children whose latest report is of the current phase. */
  #current(): Child[] {
    return this.#children.filter((child) => child.progress.phase === this.#phase);
  }

  #waitFor(condition: () => boolean, what: string, timeoutMs: number): Promise<void> {
    return waitUntil(
      () => {
        const exited = this.#children.find((child) => child.process.exitCode !== null);
        if (exited) throw new Error(`a runtime exited with ${exited.process.exitCode}:\n${exited.stderr()}`);
        return condition();
      },
      what,
      timeoutMs,
      10,
    );
  }
}

/** Spawns one child with the tsx loader and the runtime's Node flags; resolves at its first report. */
function startChild(options: RuntimeChildrenOptions): Promise<Child> {
  const child = spawn(process.execPath, [...RUNTIME_NODE_FLAGS, "--import", "tsx", CHILD], {
    cwd: path.resolve(HERE, ".."),
    env: {
      ...process.env,
      BENCH_NATS_URL: options.natsUrl,
      BENCH_DATABASE_URL: options.databaseUrl,
      BENCH_FUNCTIONS_DIR: options.functionsDir,
      BENCH_REPLICAS: String(options.replicas),
    },
    stdio: ["ignore", "ignore", "pipe", "ipc"],
  });
  let stderr = "";
  const state: Child = {
    process: child,
    pid: child.pid ?? -1,
    progress: { type: "progress", phase: -1, done: 0 },
    stderr: () => stderr.slice(-2_000),
  };
  child.stderr?.on("data", (chunk: Buffer) => {
    // Its warnings go where an in-process runtime's go (jetfn-host.ts benchLogger: stderr).
    process.stderr.write(chunk);
    stderr = (stderr + chunk.toString()).slice(-4_000);
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`a runtime was not ready within ${READY_TIMEOUT_MS} ms:\n${state.stderr()}`));
    }, READY_TIMEOUT_MS);
    child.on("message", (message) => {
      if (!isProgressMessage(message)) return;
      state.progress = message;
      clearTimeout(timer);
      resolve(state);
    });
    child.once("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`a runtime exited with ${code} before it was ready:\n${state.stderr()}`));
    });
  });
}
