import { writeFile } from "node:fs/promises";
import path from "node:path";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { describe, expect, it } from "vitest";
import { LEASE_MS } from "../../runtime/flow/flow-control";
import { FLOW_BUCKET } from "../../runtime/flow/slot-board";
import { readWaitingJobs } from "../../runtime/flow/waiting-room";
import type { Runtime } from "../../runtime/runtime";
import { eventually } from "../helpers/environment";
import { useFunctionsDirEnvironment } from "../helpers/functions-dir-environment";
import type { CapturedLogger } from "../helpers/logs";

/**
 * A lease kept for a woken job that will not take it (its input no longer passes the schema, its
 * key function now throws, its attempts ran out, its runtime stopped before its gate, its function
 * lost the limit) goes on to the next job waiting, or is written free, rather than idling until it
 * runs out.
 */

const scene = useFunctionsDirEnvironment("jetfn-kept-lease-");

/** The input whose first attempt fails; its retry comes 3 s later. */
const FAILS_FIRST = 13;

/**
 * A function limited to one job at a time, whose input schema and key are given as source text,
 * with `attempts` attempts per job.
 */
function source(input: string, key = "", attempts = 1): string {
  return `import { defineFunction, z } from "jetfn";
export default defineFunction({
  input: z.object({ n: ${input} }),
  concurrencyLimit: { limit: 1${key} },
  retry: { attempts: ${attempts}, backoff: "3s" },
  async handler({ n }, ctx) {
    if (n === ${FAILS_FIRST} && ctx.attempt === 1) throw new Error("its first attempt fails");
    return { n, start: Date.now() };
  },
});
`;
}

/** Waits until `runtime` runs its redeployed version of `fn` (its registry has it a moment before its jobs do). */
function redeployed(runtime: Runtime & { logs: CapturedLogger }, fn: string): Promise<boolean> {
  return eventually(() => runtime.logs.lines.some((line) => line.msg === `Redeployed ${fn}.`), 20_000);
}

/** Holds the function's one slot, as a runtime would, until `until`. */
async function holdSlot(fn: string, until: number): Promise<void> {
  const { client } = scene();
  const bucket = await new Kvm(client.connection).open(FLOW_BUCKET);
  await bucket.put(`c._.${fn}.0`, JSON.stringify({ until }));
}

/** Parks a job behind the held slot: enqueued, then seen waiting. */
async function parked(fn: string, n: number): Promise<string> {
  const { client } = scene();
  const { id } = await client.enqueue(fn as never, { n } as never);
  await eventually(async () => (await client.status(id)).status === "waiting", 20_000);
  return id;
}

/**
 * Parks jobs of inputs `ns` behind the held slot, redeploys the function from `before` to `after`,
 * then frees the slot: the sweep wakes the first of them with the slot kept for it. With
 * `failedOnce`, the first is a job of `FAILS_FIRST` whose first attempt ran (the slot was free) and
 * failed, parked when its retry came. Returns their ids and when the slot freed.
 */
async function wokenAfterRedeploy(
  fn: string,
  before: string,
  after: string,
  ns: number[],
  { failedOnce = false } = {},
): Promise<{ ids: string[]; freed: number }> {
  const { env, client, dir } = scene();
  const file = path.join(dir, `${fn}.ts`);
  await writeFile(file, before);
  const runtime = await env.startRuntime({ functionsDir: dir, watch: true });
  const ids: string[] = [];
  if (failedOnce) {
    const { id } = await client.enqueue(fn as never, { n: FAILS_FIRST } as never);
    ids.push(id);
    // Its record says failed (and stays so while it waits: status reads the record first).
    await eventually(async () => (await client.status(id)).status === "failed", 20_000);
  }
  await holdSlot(fn, Date.now() + 3_600_000);
  if (failedOnce) {
    const manager = await jetstreamManager(client.connection);
    await eventually(async () => (await readWaitingJobs(manager, "JETFN_JOBS")).get(fn) === 1, 20_000);
  }
  for (const n of ns) ids.push(await parked(fn, n));
  await writeFile(file, after);
  await redeployed(runtime, fn);
  const freed = Date.now();
  await holdSlot(fn, 0);
  return { ids, freed };
}

/** The job's view once it ended with `status`. */
function ended(id: string, status: string) {
  return eventually(async () => {
    const view = await scene().client.status(id);
    return view.status === status ? view : undefined;
  }, 30_000);
}

/**
 * The woken job `ids[0]` ended dead with `code`, and the next one, `ids[1]`, started soon after the
 * slot freed at `freed`: with the lease passed on, not once the keeping ran out (LEASE_MS after the wake).
 */
async function expectPassedOn(ids: string[], freed: number, code: string, label: string): Promise<void> {
  expect(((await ended(ids[0] as string, "dead")).error as { code?: string }).code).toBe(code);
  const startedAfter = Date.parse((await ended(ids[1] as string, "succeeded")).startedAt as string) - freed;
  console.info(`kept lease, ${label}: the next job started ${startedAfter} ms after the slot freed`);
  expect(startedAfter).toBeLessThan(LEASE_MS / 3);
}

describe("a lease kept for a woken job that does not use it", () => {
  it("goes to the next job when the woken job's input fails the redeployed schema", async () => {
    const { ids, freed } = await wokenAfterRedeploy(
      "kept-schema",
      source("z.number()"),
      source("z.number().min(0)"),
      [-1, 1],
    );
    await expectPassedOn(ids, freed, "E_INPUT_INVALID", "refused input");
  });

  it("goes to the next job when the woken job's key function throws after a redeploy", async () => {
    const key = `, key: (input) => { if (input.n < 0) throw new Error("no key for a negative n"); return "all"; }`;
    const { ids, freed } = await wokenAfterRedeploy(
      "kept-key-throws",
      source("z.number()"),
      source("z.number()", key),
      [-1, 1],
    );
    await expectPassedOn(ids, freed, "E_FLOW_KEY_INVALID", "key threw");
  });

  it("goes to the next job when the woken job's attempts ran out with a redeploy", async () => {
    // Its first attempt failed and its second waited; the function now allows one.
    const { ids, freed } = await wokenAfterRedeploy(
      "kept-exhausted",
      source("z.number()", "", 2),
      source("z.number()", "", 1),
      [1],
      { failedOnce: true },
    );
    await expectPassedOn(ids, freed, "E_ATTEMPTS_EXHAUSTED", "attempts ran out");
  });

  it("goes to the next job of its old key when the woken job's key changed with a redeploy", async () => {
    // Parked function-wide; after the redeploy each job's slots are those of key "all".
    const { ids, freed } = await wokenAfterRedeploy(
      "kept-key-changed",
      source("z.number()"),
      source("z.number()", `, key: () => "all"`),
      [1, 2],
    );
    const [first, second] = await Promise.all(ids.map((id) => ended(id, "succeeded")));
    const startedAfter = Date.parse(second?.startedAt as string) - freed;
    console.info(`kept lease, key changed: the second job started ${startedAfter} ms after the slot freed`);
    expect(Date.parse(second?.startedAt as string)).toBeGreaterThanOrEqual(Date.parse(first?.startedAt as string));
    expect(startedAfter).toBeLessThan(LEASE_MS / 3);
  });
});

/**
 * A function of one handler at a time per runtime whose jobs honour the abort; `limited`, one job
 * per tenant everywhere.
 */
function tenantSource(limited: boolean): string {
  return `import { defineFunction, z } from "jetfn";
export default defineFunction({
  input: z.object({ tenant: z.string(), ms: z.number().default(0) }),
  concurrency: 1,${limited ? "\n  concurrencyLimit: { limit: 1, key: (input) => input.tenant }," : ""}
  timeout: "60s",
  async handler({ ms }, ctx) {
    await new Promise((resolve) => { const timer = setTimeout(resolve, ms); ctx.signal.addEventListener("abort", () => { clearTimeout(timer); resolve(undefined); }); });
    return { start: Date.now() };
  },
});
`;
}

/** A job held by a runtime comes back only after a minute, longer than anything here. */
const HOLDING = { maxAckWait: "60s", shutdownGrace: "1s" } as const;

/**
 * Parks `count` jobs of tenant "t" of `fn` (tenantSource(true)) behind its held slot on a runtime
 * whose one handler slot a long job then keeps busy, and frees the slot: the sweep keeps it for the
 * first waiting job and wakes it, and the runtime takes the woken job, which waits there for the
 * handler slot. Returns the waiting jobs' ids and the runtime.
 */
async function wokenBehindBusyHandler(fn: string, count: number): Promise<{ ids: string[]; runtime: Runtime }> {
  const { env, client, dir } = scene();
  await writeFile(path.join(dir, `${fn}.ts`), tenantSource(true));
  const runtime = await env.startRuntime({ functionsDir: dir, ...HOLDING });
  const bucket = await new Kvm(client.connection).open(FLOW_BUCKET);
  const slot = `c.k_t.${fn}.0`;
  await bucket.put(slot, JSON.stringify({ until: Date.now() + 3_600_000 }));
  const ids: string[] = [];
  for (let n = 0; n < count; n++) {
    const { id } = await client.enqueue(fn as never, { tenant: "t" } as never);
    await eventually(async () => (await client.status(id)).status === "waiting", 20_000);
    ids.push(id);
  }
  const long = await client.enqueue(fn as never, { tenant: "long", ms: 60_000 } as never);
  await eventually(async () => (await client.status(long.id)).status === "running", 20_000);
  const consumer = await jetstream(client.connection).consumers.get("JETFN_JOBS", fn);
  await bucket.put(slot, JSON.stringify({ until: 0 }));
  await eventually(async () => (await consumer.info()).num_ack_pending === 2, 20_000);
  expect(JSON.parse((await bucket.get(slot))?.string() ?? "{}").for).toBe(ids[0]);
  return { ids, runtime };
}

describe("a lease kept for a woken job whose runtime stops before its gate", () => {
  it("is taken by that job on another runtime at once, and the next job follows", { timeout: 90_000 }, async () => {
    const { env, dir } = scene();
    const fn = "kept-stopped";
    const {
      ids: [woken, next],
      runtime,
    } = await wokenBehindBusyHandler(fn, 2);
    // Stopped before the handler slot frees: the grace runs out, the woken job never reached its gate.
    await runtime.stop();
    const stopped = Date.now();
    await env.startRuntime({ functionsDir: dir, ...HOLDING });
    const [ran, after] = await Promise.all([ended(woken as string, "succeeded"), ended(next as string, "succeeded")]);
    const startedAfter = Date.parse(after.startedAt as string) - stopped;
    console.info(
      `kept lease, runtime stopped: the woken job started ${Date.parse(ran.startedAt as string) - stopped} ms and the next ${startedAfter} ms after the stop`,
    );
    // In their order, and not by the keeping running out (LEASE_MS after the wake).
    expect(Date.parse(after.startedAt as string)).toBeGreaterThanOrEqual(Date.parse(ran.startedAt as string));
    expect(startedAfter).toBeLessThan(LEASE_MS / 3);
  });
});

// Nothing waits for a limit the function no longer has (its sweep wakes the limit's jobs whole), but
// a runtime still on the version with the limit, or the limit put back, would see the lease taken.
describe("a lease kept for a woken job that reaches a version of its function without the limit", () => {
  for (const cancelled of [true, false]) {
    it(`is written free when the job ${cancelled ? "is cancelled" : "runs"}: the limit put back admits a job at once`, {
      timeout: 90_000,
    }, async () => {
      const { env, client, dir } = scene();
      const fn = cancelled ? "kept-unlimited-cancelled" : "kept-unlimited-ran";
      const file = path.join(dir, `${fn}.ts`);
      const {
        ids: [woken],
        runtime,
      } = await wokenBehindBusyHandler(fn, 1);
      if (cancelled) await client.cancel(woken as string, { reason: "not needed" });
      // Handed back before its gate, to a runtime whose version of the function has no limit.
      await runtime.stop();
      await writeFile(file, tenantSource(false));
      const unlimited = await env.startRuntime({ functionsDir: dir, watch: true, ...HOLDING });
      if (cancelled) {
        const ending = (line: Record<string, unknown>) =>
          line.invocationId === woken && String(line.msg).startsWith("Job cancelled");
        await eventually(() => unlimited.logs.lines.some(ending), 20_000);
      } else await ended(woken as string, "succeeded");
      // The limit comes back (a redeploy reverted, say) within the keeping's time.
      await writeFile(file, tenantSource(true));
      await redeployed(unlimited, fn);
      const enqueued = Date.now();
      const { id } = await client.enqueue(fn as never, { tenant: "t" } as never);
      const startedAfter = Date.parse((await ended(id, "succeeded")).startedAt as string) - enqueued;
      console.info(
        `kept lease, woken job ${cancelled ? "cancelled" : "ran"} without the limit: a job of the limit put back started ${startedAfter} ms after its enqueue`,
      );
      // Not once the keeping ran out (LEASE_MS after the wake).
      expect(startedAfter).toBeLessThan(LEASE_MS / 3);
    });
  }
});
