import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { eventually, FIXTURE_FUNCTIONS } from "../helpers/environment";
import {
  enqueueAcknowledged,
  type FaultCluster,
  jobOutcome,
  keepCalling,
  report,
  useFaultCluster,
} from "./support/fault-cluster";

// The misbehaving handlers of bad-handlers.test.ts, with `isolation: "thread"`: each runs in a
// worker thread of one of two `jetfn start` processes while a caller keeps calling `add` (not
// isolated) every 100ms. The test still acts as a supervisor; no runtime should need it.

const cluster = useFaultCluster({
  JETFN_MAX_ACK_WAIT: "2s",
  JETFN_FUNCTIONS: path.resolve(FIXTURE_FUNCTIONS, "../isolated-functions"),
});
let supervisor: ReturnType<FaultCluster["supervise"]>;

beforeAll(() => {
  supervisor = cluster().supervise();
});

afterAll(async () => {
  await supervisor?.stop();
});

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

/** Runs one misbehaving job while `add` is called; reports and returns the outcome. */
async function scenario(name: string, fn: string, input: unknown) {
  const before = supervisor.restarts;
  const calls = keepCalling(cluster().nc);
  const started = Date.now();
  const outcome = await waitForEnd(await enqueueOne(fn, input));
  const ms = Date.now() - started;
  // Keep calling a little longer: a thread being terminated must not disturb the runtime either.
  await new Promise((resolve) => setTimeout(resolve, 1_000));
  const counted = await calls.stop();
  const figures = { status: outcome.status, code: outcome.code, attempts: outcome.attempts, ms, calls: counted };
  report(name, {
    ...figures,
    errors: outcome.errors.map((error) => error.code),
    restarts: supervisor.restarts - before,
  });
  return { outcome, counted, restarts: supervisor.restarts - before };
}

describe('misbehaving handlers with isolation: "thread"', () => {
  it("a handler that hangs forever times out on each attempt and ends dead", async () => {
    const { outcome, counted, restarts } = await scenario("isolated-hang", "fault-hang-isolated", {});
    expect(outcome).toMatchObject({ status: "dead", code: "E_HANDLER_TIMEOUT", attempts: 2 });
    expect(counted.failed).toBe(0);
    expect(restarts).toBe(0);
  }, 90_000);

  it("a leaked rejected promise is logged with the function's name; the job's result stands", async () => {
    const { outcome, counted, restarts } = await scenario(
      "isolated-leaked-rejection",
      "fault-leak-rejection-isolated",
      {},
    );
    await eventually(() =>
      cluster().runtimes.some((runtime) =>
        runtime
          .output()
          .split("\n")
          .some(
            (line) =>
              line.includes("rejected in a worker thread") && line.includes('"fn":"fault-leak-rejection-isolated"'),
          ),
      ),
    );
    expect(outcome.status).toBe("succeeded");
    expect(counted.failed).toBe(0);
    expect(restarts).toBe(0);
  }, 90_000);

  it("process.exit ends only the worker thread: each attempt fails with E_HANDLER_EXITED, no runtime is lost", async () => {
    const { outcome, counted, restarts } = await scenario("isolated-process-exit", "fault-exit-isolated", {
      always: true,
    });
    expect(outcome).toMatchObject({ status: "dead", code: "E_HANDLER_EXITED", attempts: 2 });
    expect(counted.failed).toBe(0);
    expect(restarts).toBe(0);
  }, 90_000);

  it("an endless CPU loop is terminated at the timeout on each attempt; calls keep being answered", async () => {
    const { outcome, counted, restarts } = await scenario("isolated-cpu-loop", "fault-cpu-isolated", {});
    expect(outcome).toMatchObject({ status: "dead", code: "E_HANDLER_TIMEOUT", attempts: 2 });
    expect(counted.failed).toBe(0);
    expect(restarts).toBe(0);
  }, 90_000);

  it("a bounded CPU burn longer than the timeout is cut at the timeout", async () => {
    const { outcome, counted, restarts } = await scenario("isolated-cpu-bounded-2s", "fault-cpu-isolated", {
      ms: 2_000,
    });
    expect(outcome).toMatchObject({ status: "dead", code: "E_HANDLER_TIMEOUT", attempts: 2 });
    expect(counted.failed).toBe(0);
    expect(restarts).toBe(0);
  }, 90_000);
});
