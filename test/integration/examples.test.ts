// The shipped example functions, tested the way a function author tests theirs: with the jetfn
// test harness (a real runtime, NATS and Postgres) and matchers on what they wrote.
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestHarness, type TestHarness } from "../../runtime/testing";
import "../helpers/matchers";

const EXAMPLES = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../functions");

let harness: TestHarness;

beforeAll(async () => {
  harness = await startTestHarness({ functionsDir: EXAMPLES });
});

afterAll(async () => {
  await harness?.close();
});

describe("the example functions from the seed articles", () => {
  it("deploys every example", () => {
    expect(harness.runtime.registry.names()).toEqual(
      expect.arrayContaining([
        "factorial",
        "memory-cache",
        "primes.is-prime",
        "primes.primes-among",
        "primes.sieve",
        "send-mail",
      ]),
    );
  });

  it("send-mail (Photon MailSender): a job that records every recipient, audited under its name", async () => {
    const to = ["ada@example.com", "grace@example.com", "linus@example.com"];
    const run = await harness.enqueue("send-mail", { to, subject: "Ticket 123 has been updated." });
    expect(run).toHaveSucceeded();
    expect(run.result).toEqual({ sent: 3 });
    expect(run).toHaveChangedRows("sent_mail", 3);
    expect(run).toHaveWritten("sent_mail", { recipient: "grace@example.com", subject: "Ticket 123 has been updated." });
    expect(run.changes.every((change) => change.function === "send-mail" && change.invocationId === run.id)).toBe(true);

    const invalid = await harness.enqueue("send-mail", { to: ["not-an-address"], subject: "x" });
    expect(invalid).toHaveDeadLettered("E_INPUT_INVALID");
    expect(invalid).toHaveWrittenNothing();
  });

  it("memory-cache (Photon MemoryCache): synchronous get/put with a time-to-live", async () => {
    const call = (input: unknown) => harness.client.call("memory-cache", input);
    expect(await call({ action: "get", key: "feed" })).toEqual({ hit: false, value: null });
    expect(await call({ action: "put", key: "feed", value: { items: [1, 2] }, ttlSeconds: 0.3 })).toEqual({ ok: true });
    expect(await call({ action: "get", key: "feed" })).toEqual({ hit: true, value: { items: [1, 2] }, hits: 1 });
    await new Promise((resolve) => setTimeout(resolve, 400));
    expect(await call({ action: "get", key: "feed" })).toEqual({ hit: false, value: null });
    await call({ action: "put", key: "other", value: 1 });
    expect(await call({ action: "delete", key: "other" })).toEqual({ deleted: true });
    const unknownAction = await harness.call("memory-cache", { action: "flush" });
    expect(unknownAction.error?.code).toBe("E_INPUT_INVALID");
  });

  it("factorial (Gearman long-running task): status and progress by handle, then the result", async () => {
    const { id } = await harness.client.enqueue("factorial", { n: 12, stepDelayMs: 150 });
    const running = await poll(async () => {
      const view = await harness.client.status(id);
      return view.status === "running" && view.progress ? view : undefined;
    });
    expect(running.progress?.total).toBe(12);
    expect(await harness.client.result(id, { timeout: "20s" })).toEqual({ n: 12, factorial: "479001600" });

    const again = await harness.enqueue("factorial", { n: 5 });
    expect(again).toHaveWritten("factorials", { n: 5, value: "120" });
  });

  it("primes (PHP-Daemon PrimeNumbers): sieve, primes_among and is_prime", async () => {
    const sieve = await harness.call("primes.sieve", { from: 1000, to: 2000 });
    expect(sieve).toHaveSucceeded();
    expect(sieve.result).toMatchObject({ count: 135, first: 1009, last: 1999 });
    expect(sieve).toHaveWrittenNothing();
    expect(await harness.client.call("primes.primes-among", { numbers: [1, 2, 9, 97, 100, 7919] })).toEqual({
      primes: [2, 97, 7919],
    });
    expect(await harness.client.call("primes.is-prime", { n: 2_147_483_647 })).toEqual({
      n: 2_147_483_647,
      prime: true,
    });
    const job = await harness.enqueue("primes.sieve", { from: 0, to: 100 });
    expect((job.result as { count: number }).count).toBe(25);
  });
});

async function poll<T>(check: () => Promise<T | undefined>, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
