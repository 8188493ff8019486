import { jetstream } from "@nats-io/jetstream";
import { connect, headers, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { StoredError } from "../../runtime/db/invocation-store";
import type { Runtime } from "../../runtime/runtime";
import type { JetfnClient } from "../../runtime/sdk/client";
import type { JetfnError } from "../../runtime/support/errors";
import { createTestEnvironment, eventually, type TestEnvironment } from "../helpers/environment";
import type { CapturedLogger } from "../helpers/logs";

let env: TestEnvironment;
let client: JetfnClient;
let runtime: Runtime & { logs: CapturedLogger };

beforeAll(async () => {
  env = await createTestEnvironment();
  await env.database.sql`create table items (id serial primary key, name text not null, attempt int, invocation text)`;
  runtime = await env.startRuntime();
  client = await env.client();
});

afterAll(async () => {
  await env?.close();
});

async function finished(id: string, timeoutMs = 10_000) {
  return eventually(async () => {
    const view = await client.status(id);
    return ["succeeded", "dead"].includes(view.status) ? view : undefined;
  }, timeoutMs);
}

async function itemsNamed(name: string): Promise<{ attempt: number; invocation: string }[]> {
  return (await env.database.sql`select attempt, invocation from items where name = ${name} order by id`) as never;
}

describe("fire-and-forget jobs on fn.job.<name>", () => {
  it("runs a job, commits its writes with its record, and keeps the result by id", async () => {
    const job = await client.enqueue("insert-item", { name: "first" });
    const view = await finished(job.id);
    expect(view).toMatchObject({
      status: "succeeded",
      function: "insert-item",
      attempts: 1,
      result: { inserted: "first" },
    });
    expect(await itemsNamed("first")).toEqual([{ attempt: 1, invocation: job.id }]);
  });

  it("takes jobs from any JetStream client, deriving an id when none is sent", async () => {
    const nc: NatsConnection = await connect({ servers: env.nats.url });
    try {
      const ack = await jetstream(nc).publish("fn.job.insert-item", JSON.stringify({ name: "plain" }));
      expect(ack.stream).toBe("JETFN_JOBS");
      const rows = await eventually(async () => {
        const found = await itemsNamed("plain");
        return found.length > 0 ? found : undefined;
      });
      expect(rows).toHaveLength(1);
      const id = rows[0]?.invocation as string;
      expect(id).toMatch(/^[0-9a-f-]{36}$/);
      expect((await finished(id)).status).toBe("succeeded");
    } finally {
      await nc.close();
    }
  });

  it("drops a repeated publish with the same Nats-Msg-Id", async () => {
    const nc = await connect({ servers: env.nats.url });
    try {
      const js = jetstream(nc);
      const header = headers();
      header.set("Jetfn-Id", "dedupe-0001");
      const first = await js.publish("fn.job.insert-item", JSON.stringify({ name: "dedupe" }), {
        msgID: "dedupe-0001",
        headers: header,
      });
      const second = await js.publish("fn.job.insert-item", JSON.stringify({ name: "dedupe" }), {
        msgID: "dedupe-0001",
        headers: header,
      });
      expect(first.duplicate).toBe(false);
      expect(second.duplicate).toBe(true);
      await finished("dedupe-0001");
      expect(await itemsNamed("dedupe")).toHaveLength(1);
    } finally {
      await nc.close();
    }
  });

  it("retries a failing job with the backoff, rolling back each failed attempt", async () => {
    const job = await client.enqueue("flaky", { name: "flaky-two", failTimes: 2 });
    const view = await finished(job.id);
    expect(view).toMatchObject({ status: "succeeded", attempts: 3, result: { succeededOnAttempt: 3 } });
    // Only the successful attempt's insert survived.
    expect(await itemsNamed("flaky-two")).toEqual([{ attempt: 3, invocation: job.id }]);
    const errors = view.errors as StoredError[];
    expect(errors.map((error) => error.attempt)).toEqual([1, 2]);
    const gap1 = Date.parse(errors[1]?.at as string) - Date.parse(errors[0]?.at as string);
    const gap2 = Date.parse(view.startedAt as string) - Date.parse(errors[1]?.at as string);
    // backoff ["300ms", "600ms"]: the second wait is the longer one.
    expect(gap1).toBeGreaterThanOrEqual(280);
    expect(gap2).toBeGreaterThanOrEqual(580);
  });

  it("declares a job dead after its last attempt, keeping input and every error", async () => {
    const job = await client.enqueue("flaky", { name: "flaky-dead", failTimes: 10 });
    const view = await finished(job.id, 15_000);
    expect(view).toMatchObject({ status: "dead", attempts: 4, input: { name: "flaky-dead", failTimes: 10 } });
    const errors = view.errors as StoredError[];
    expect(errors.map((error) => error.attempt)).toEqual([1, 2, 3, 4]);
    expect(errors[3]).toMatchObject({ code: "E_HANDLER_FAILED", name: "Error", message: "attempt 4 fails on purpose" });
    expect(errors[3]?.stack).toContain("flaky.ts:11:");
    expect(await itemsNamed("flaky-dead")).toEqual([]);
    const reason = await client.result(job.id).catch((error: JetfnError) => error);
    expect(reason).toMatchObject({ code: "E_HANDLER_FAILED" });
  });

  it("fails a NonRetryableError at once, without retries", async () => {
    const job = await client.enqueue("non-retryable", { customer: "c-42" });
    const view = await finished(job.id);
    expect(view).toMatchObject({ status: "dead", attempts: 1 });
    expect(view.errors).toEqual([expect.objectContaining({ code: "E_NON_RETRYABLE", name: "NonRetryableError" })]);
  });

  it("fails invalid input at once, with the zod issues", async () => {
    const job = await client.enqueue("add", { a: 1 });
    const view = await finished(job.id);
    expect(view).toMatchObject({ status: "dead", attempts: 1 });
    expect((view.errors as StoredError[])[0]).toMatchObject({
      code: "E_INPUT_INVALID",
      issues: [expect.objectContaining({ path: ["b"] })],
    });
  });

  it("fails a body that is not JSON at once", async () => {
    const nc = await connect({ servers: env.nats.url });
    try {
      const header = headers();
      header.set("Jetfn-Id", "not-json-0001");
      await jetstream(nc).publish("fn.job.add", "{nope", { headers: header });
      const view = await finished("not-json-0001");
      expect(view).toMatchObject({ status: "dead", attempts: 1, input: null });
      expect((view.error as StoredError).message).toContain("not valid JSON");
    } finally {
      await nc.close();
    }
  });

  it("counts a timeout as a failed attempt and retries it", async () => {
    const job = await client.enqueue("sleep", { ms: 2_000 });
    const view = await finished(job.id, 15_000);
    expect(view).toMatchObject({ status: "dead", attempts: 2 });
    expect((view.errors as StoredError[]).map((error) => error.code)).toEqual([
      "E_HANDLER_TIMEOUT",
      "E_HANDLER_TIMEOUT",
    ]);
  });

  it("honours RetryAfterError's delay instead of the policy's backoff", async () => {
    const job = await client.enqueue("retry-after", {});
    const view = await finished(job.id);
    expect(view).toMatchObject({ status: "succeeded", attempts: 2 });
    const firstError = (view.errors as StoredError[])[0] as StoredError;
    const waited = Date.parse(view.startedAt as string) - Date.parse(firstError.at);
    expect(waited).toBeGreaterThanOrEqual(650);
    expect(waited).toBeLessThan(5_000);
  });

  it("publishes jobs a handler enqueued only when its transaction commits", async () => {
    const ok = await client.enqueue("enqueue-next", { name: "parent-ok" });
    const okView = await finished(ok.id);
    const childId = (okView.result as { child: string }).child;
    expect((await finished(childId)).status).toBe("succeeded");
    expect(await itemsNamed("parent-ok-child")).toHaveLength(1);

    const failed = await client.enqueue("enqueue-next", { name: "parent-fails", fail: true });
    expect((await finished(failed.id)).status).toBe("dead");
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(await itemsNamed("parent-fails-child")).toEqual([]);
    expect(await itemsNamed("parent-fails")).toEqual([]);
  });

  it("lets a caller wait for a job's result (durable request-reply)", async () => {
    await expect(client.enqueueAndWait("add", { a: 20, b: 22 })).resolves.toEqual({ sum: 42 });
  });

  it("keeps a job going when its waiter gives up, and its result can be fetched later", async () => {
    const job = await client.enqueue("progress", { steps: 4, stepMs: 300 });
    await expect(client.result(job.id, { timeout: "200ms" })).rejects.toMatchObject({ code: "E_HANDLER_TIMEOUT" });
    await expect(client.result(job.id, { timeout: "10s" })).resolves.toEqual({ steps: 4 });
  });

  it("shows a running job's progress to another client while it runs", async () => {
    const job = await client.enqueue("progress", { steps: 10, stepMs: 250 });
    const other = await env.client();
    const seen = await eventually(async () => {
      const view = await other.status(job.id);
      return view.status === "running" && view.progress && view.progress.done >= 2 ? view : undefined;
    });
    expect(seen.progress).toMatchObject({ total: 10 });
    expect(seen.function).toBe("progress");
    expect((await finished(job.id)).status).toBe("succeeded");
  });

  it("logs every invocation's end with function, invocation id and attempt", async () => {
    const job = await client.enqueue("add", { a: 1, b: 1 });
    await finished(job.id);
    const line = await eventually(() =>
      runtime.logs.lines.find((entry) => entry.invocationId === job.id && entry.outcome),
    );
    expect(line).toMatchObject({ fn: "add", attempt: 1, outcome: "succeeded" });
    expect(typeof line.durationMs).toBe("number");
  });
});
