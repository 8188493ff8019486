import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { eventually } from "../helpers/environment";
import {
  cpuTicks,
  enqueueAcknowledged,
  type FaultCluster,
  jobOutcome,
  keepCalling,
  report,
  useFaultCluster,
} from "./support/fault-cluster";

// Handlers that misbehave, each run by one of two `jetfn start` processes while a caller keeps
// calling another function (`add`) every 100ms. The test restarts runtimes that die, as a process
// supervisor would; for the CPU burner it is also the liveness probe that kills the stuck process.

const cluster = useFaultCluster({ JETFN_MAX_ACK_WAIT: "2s" });
let supervisor: ReturnType<FaultCluster["supervise"]>;

beforeAll(() => {
  supervisor = cluster().supervise();
});

afterAll(async () => {
  await supervisor?.stop();
});

function isAlive(runtime: FaultCluster["runtimes"][number]): boolean {
  return runtime.child.exitCode === null && runtime.child.signalCode === null;
}

async function enqueueOne(fn: string, input: unknown): Promise<string> {
  const { ids } = await enqueueAcknowledged(cluster().js, fn, 1, () => input);
  return ids[0] as string;
}

async function waitForEnd(id: string, timeoutMs = 60_000) {
  return eventually(async () => {
    const outcome = await jobOutcome(cluster().env, id);
    return outcome && (outcome.status === "dead" || outcome.status === "succeeded") ? outcome : undefined;
  }, timeoutMs);
}

describe("misbehaving handlers", () => {
  it("a handler that hangs forever times out on each attempt and ends dead; calls keep working", async () => {
    const calls = keepCalling(cluster().nc);
    const started = Date.now();
    const id = await enqueueOne("fault-hang", {});
    const outcome = await waitForEnd(id);
    const counted = await calls.stop();
    report("hang", {
      ...outcome,
      errors: undefined,
      calls: counted,
      restarts: supervisor.restarts,
      ms: Date.now() - started,
    });
    expect(outcome).toMatchObject({ status: "dead", code: "E_HANDLER_TIMEOUT", attempts: 2 });
    expect(counted.failed).toBe(0);
    expect(supervisor.restarts).toBe(0);
  }, 90_000);

  it("a leaked rejected promise is logged; the runtime survives and the job's result stands", async () => {
    const calls = keepCalling(cluster().nc);
    const id = await enqueueOne("fault-leak-rejection", {});
    const outcome = await waitForEnd(id);
    await eventually(() => cluster().runtimes.some((runtime) => runtime.output().includes("nobody handled it")));
    const counted = await calls.stop();
    report("leaked-rejection", { status: outcome.status, calls: counted, restarts: supervisor.restarts });
    expect(outcome.status).toBe("succeeded");
    expect(counted.failed).toBe(0);
    expect(supervisor.restarts).toBe(0);
  }, 90_000);

  it("process.exit in a handler ends that runtime; the spare delivery declares the job dead", async () => {
    const before = supervisor.restarts;
    const calls = keepCalling(cluster().nc);
    const started = Date.now();
    const id = await enqueueOne("fault-exit", {});
    const outcome = await waitForEnd(id);
    await eventually(() => cluster().runtimes.every(isAlive), 60_000);
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    const counted = await calls.stop();
    report("process-exit", {
      status: outcome.status,
      code: outcome.code,
      runtimesLost: supervisor.restarts - before,
      calls: counted,
      ms: Date.now() - started,
    });
    expect(outcome).toMatchObject({ status: "dead", code: "E_ATTEMPTS_EXHAUSTED" });
    expect(supervisor.restarts - before).toBe(1);
  }, 90_000);

  it("a CPU-burning loop blocks its runtime until killed; the spare delivery declares the job dead", async () => {
    const before = supervisor.restarts;
    const calls = keepCalling(cluster().nc);
    const started = Date.now();
    const id = await enqueueOne("fault-cpu", {});
    // Find the runtime whose event loop is stuck: it burns a whole core.
    const stuck = await eventually(async () => {
      const busy = await Promise.all(
        cluster().runtimes.map(async (runtime) => {
          const pid = runtime.child.pid as number;
          const first = await cpuTicks(pid);
          await new Promise((resolve) => setTimeout(resolve, 2_000));
          return { runtime, ticks: (await cpuTicks(pid)) - first };
        }),
      );
      // Ticks are 1/100 s: a spinning event loop takes all the CPU it is given, an idle runtime a
      // few ticks. On an oversubscribed machine a spinner gets far less than a core, so look for
      // the one far busier than the others rather than for a whole core.
      const [busiest, ...others] = [...busy].sort((a, b) => b.ticks - a.ticks);
      const quiet = others.every((sample) => busiest !== undefined && sample.ticks * 3 < busiest.ticks);
      return busiest && busiest.ticks >= 30 && quiet ? busiest.runtime : undefined;
    }, 60_000);
    const blockedMs = Date.now() - started;
    // Its lease lapses (no in-progress pings from a blocked loop), so the spare delivery may already
    // have gone to the other runtime and declared the job dead; the stuck process spins on regardless.
    const outcome = await waitForEnd(id);
    const stillSpinning = isAlive(stuck);
    process.kill(stuck.child.pid as number, "SIGKILL");
    await stuck.stop();
    await eventually(() => supervisor.restarts > before && cluster().runtimes.every(isAlive), 60_000);
    const counted = await calls.stop();
    report("cpu-loop", {
      status: outcome.status,
      code: outcome.code,
      foundStuckAfterMs: blockedMs,
      stillSpinningWhenJobDead: stillSpinning,
      runtimesLost: supervisor.restarts - before,
      calls: counted,
      ms: Date.now() - started,
    });
    expect(outcome).toMatchObject({ status: "dead", code: "E_ATTEMPTS_EXHAUSTED" });
    expect(supervisor.restarts - before).toBe(1);
  }, 90_000);

  it("a bounded CPU burn longer than the timeout delays everything on its runtime", async () => {
    const calls = keepCalling(cluster().nc);
    const id = await enqueueOne("fault-cpu", { ms: 2_000 });
    const outcome = await waitForEnd(id);
    await new Promise((resolve) => setTimeout(resolve, 500));
    const counted = await calls.stop();
    report("cpu-bounded-2s", { status: outcome.status, code: outcome.code, calls: counted });
    // The timeout timer cannot fire while the loop runs; the handler's result wins the race.
    expect(["succeeded", "dead"]).toContain(outcome.status);
  }, 90_000);
});
