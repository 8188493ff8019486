import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { StoredError } from "../../runtime/db/invocation-store";
import type { Runtime } from "../../runtime/runtime";
import type { JetfnClient } from "../../runtime/sdk/client";
import type { JetfnError } from "../../runtime/support/errors";
import { createTestEnvironment, eventually, FIXTURE_FUNCTIONS, type TestEnvironment } from "../helpers/environment";
import type { CapturedLogger } from "../helpers/logs";

// Functions with `isolation: "thread"` next to plain ones (`add`), on one runtime with real NATS and Postgres.
const ISOLATED_FUNCTIONS = path.resolve(FIXTURE_FUNCTIONS, "../isolated-functions");

let env: TestEnvironment;
let client: JetfnClient;
let runtime: Runtime & { logs: CapturedLogger };

beforeAll(async () => {
  env = await createTestEnvironment();
  await env.database.sql`create table items (id serial primary key, name text not null, attempt int, invocation text)`;
  runtime = await env.startRuntime({ functionsDir: ISOLATED_FUNCTIONS });
  client = await env.client();
}, 60_000);

afterAll(async () => {
  await env?.close();
});

async function finished(id: string, timeoutMs = 20_000) {
  const view = await eventually(async () => {
    const current = await client.status(id);
    return ["succeeded", "dead"].includes(current.status) ? current : undefined;
  }, timeoutMs);
  return { ...view, errors: (view.errors ?? []) as StoredError[] };
}

async function itemsNamed(prefix: string): Promise<{ name: string; invocation: string }[]> {
  return (await env.database.sql`
    select name, invocation from items where name like ${`${prefix}%`} order by id`) as never;
}

/** Calls `add` (not isolated) every 50ms until stopped; returns each call's latency, or -1 for a failure. */
function keepCalling(): { stop(): Promise<number[]> } {
  let stopped = false;
  const latencies: number[] = [];
  const loop = (async () => {
    while (!stopped) {
      const started = performance.now();
      try {
        await client.call("add", { a: 1, b: 2 }, { timeout: "2s" });
        latencies.push(performance.now() - started);
      } catch {
        latencies.push(-1);
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  })();
  return {
    async stop() {
      stopped = true;
      await loop;
      return latencies;
    },
  };
}

describe('isolation: "thread"', () => {
  it("commits an isolated job's writes (nested savepoint too) with its record, audited with its name, and its outbox", async () => {
    const job = await client.enqueue("insert-isolated", { name: "iso-commit", next: "iso-commit-next" });
    const view = await finished(job.id);
    expect(view).toMatchObject({ status: "succeeded", attempts: 1, result: { inserted: "iso-commit", rows: 1 } });
    expect((view.result as { threadId: number }).threadId).toBeGreaterThan(0);
    const rows = await eventually(async () => {
      const found = await itemsNamed("iso-commit");
      return found.length === 4 ? found : undefined;
    });
    expect(rows.map((row) => row.name)).toEqual([
      "iso-commit",
      "iso-commit-nested",
      "iso-commit-next",
      "iso-commit-next-nested",
    ]);
    const audit = await env.database.sql`
      select function, invocation_id, attempt, operation, new_row->>'name' as name
      from jetfn.audit_log where table_name = 'items' and invocation_id = ${job.id} order by id`;
    expect(audit).toEqual([
      { function: "insert-isolated", invocation_id: job.id, attempt: 1, operation: "INSERT", name: "iso-commit" },
      {
        function: "insert-isolated",
        invocation_id: job.id,
        attempt: 1,
        operation: "INSERT",
        name: "iso-commit-nested",
      },
    ]);
    const logged = runtime.logs.matching("Inserted in a worker thread.");
    expect(logged[0]).toMatchObject({ fn: "insert-isolated", invocationId: job.id, attempt: 1, name: "iso-commit" });
  });

  it("rolls an isolated job's writes back when it fails, and retries it", async () => {
    const job = await client.enqueue("insert-isolated", { name: "iso-rollback", fail: true });
    const view = await finished(job.id);
    expect(view.status).toBe("dead");
    expect(view.errors.map((error) => [error.attempt, error.code, error.message])).toEqual([
      [1, "E_HANDLER_FAILED", "asked to fail after inserting iso-rollback"],
      [2, "E_HANDLER_FAILED", "asked to fail after inserting iso-rollback"],
    ]);
    // The worker thread runs the compiled bundle; the stack still names the source line of the throw.
    expect(view.errors[0]?.stack).toContain("insert-isolated.ts:24:");
    expect(await itemsNamed("iso-rollback")).toEqual([]);
    const [audit] = await env.database.sql`
      select count(*)::int as n from jetfn.audit_log where invocation_id = ${job.id}`;
    expect(audit?.n).toBe(0);
  });

  it("times out a CPU-spinning isolated handler while a plain function keeps answering at its usual latency", async () => {
    const baseline = keepCalling();
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    const before = await baseline.stop();
    const calls = keepCalling();
    const started = performance.now();
    const job = await client.enqueue("fault-cpu-isolated", {});
    const view = await finished(job.id);
    const tookMs = performance.now() - started;
    const during = await calls.stop();
    expect(view).toMatchObject({ status: "dead", attempts: 2 });
    expect(view.errors.map((error) => error.code)).toEqual(["E_HANDLER_TIMEOUT", "E_HANDLER_TIMEOUT"]);
    // The second attempt's thread is terminated once the grace after its timeout is over.
    await eventually(() => runtime.logs.matching("its worker thread is terminated").length === 2);
    expect(during.filter((ms) => ms < 0)).toEqual([]);
    const worst = Math.max(...during);
    console.log(
      `[isolation] cpu-spin: dead in ${Math.round(tookMs)} ms; add calls: ${during.length} during, p50 ${median(during).toFixed(1)} ms, worst ${worst.toFixed(1)} ms (before: p50 ${median(before).toFixed(1)} ms, worst ${Math.max(...before).toFixed(1)} ms)`,
    );
    expect(during.length).toBeGreaterThan(10);
    expect(worst).toBeLessThan(250);
  });

  it("fails only the attempt whose isolated handler calls process.exit; the runtime keeps serving", async () => {
    const job = await client.enqueue("fault-exit-isolated", {});
    const view = await finished(job.id);
    expect(view).toMatchObject({ status: "succeeded", attempts: 2, result: { attempt: 2 } });
    expect(view.errors[0]).toMatchObject({ attempt: 1, code: "E_HANDLER_EXITED" });
    expect(view.errors[0]?.message).toContain("exited with code 3");
    const error = await client.call("fault-exit-isolated", { always: true }).catch((thrown: JetfnError) => thrown);
    expect(error).toMatchObject({ code: "E_HANDLER_EXITED" });
    expect(await client.call("add", { a: 2, b: 2 })).toEqual({ sum: 4 });
    expect(await client.call("add-isolated", { a: 2, b: 3 })).toEqual({ sum: 5 });
  });

  it("times out an isolated handler that never settles, and logs a rejection it leaked without stopping", async () => {
    const hang = await client.enqueue("fault-hang-isolated", {});
    const leak = await client.enqueue("fault-leak-rejection-isolated", {});
    expect(await finished(hang.id)).toMatchObject({
      status: "dead",
      attempts: 2,
      error: { code: "E_HANDLER_TIMEOUT" },
    });
    expect(await finished(leak.id)).toMatchObject({ status: "succeeded" });
    const logged = await eventually(() => runtime.logs.matching("rejected in a worker thread")[0]);
    expect(logged).toMatchObject({ fn: "fault-leak-rejection-isolated", level: 50 });
    expect(JSON.stringify(logged.err)).toContain("leaked rejection from fault-leak-rejection-isolated");
    expect(await client.call("add-isolated", { a: 1, b: 1 })).toEqual({ sum: 2 });
  });
});

function median(values: number[]): number {
  const sorted = values.filter((value) => value >= 0).sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? Number.NaN;
}
