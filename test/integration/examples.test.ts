import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { JetfnClient } from "../../runtime/client";
import { createTestEnvironment, eventually, type TestEnvironment } from "../helpers/environment";

const EXAMPLES = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../functions");

let env: TestEnvironment;
let client: JetfnClient;

beforeAll(async () => {
  env = await createTestEnvironment();
  const runtime = await env.startRuntime({ functionsDir: EXAMPLES });
  expect(runtime.registry.names()).toEqual([
    "factorial",
    "memory-cache",
    "primes.is-prime",
    "primes.primes-among",
    "primes.sieve",
    "send-mail",
  ]);
  client = await env.client();
});

afterAll(async () => {
  await env?.close();
});

describe("the example functions from the seed articles", () => {
  it("send-mail (Photon MailSender): a job that records every recipient", async () => {
    const to = ["ada@example.com", "grace@example.com", "linus@example.com"];
    const result = await client.enqueueAndWait("send-mail", { to, subject: "Ticket 123 has been updated." });
    expect(result).toEqual({ sent: 3 });
    const rows = await env.database.sql`select recipient, subject from sent_mail order by id`;
    expect(rows).toEqual(to.map((recipient) => ({ recipient, subject: "Ticket 123 has been updated." })));
    await expect(client.enqueueAndWait("send-mail", { to: ["not-an-address"], subject: "x" })).rejects.toMatchObject({
      code: "E_INPUT_INVALID",
    });
  });

  it("memory-cache (Photon MemoryCache): synchronous get/put with a time-to-live", async () => {
    expect(await client.call("memory-cache", { action: "get", key: "feed" })).toEqual({ hit: false, value: null });
    expect(
      await client.call("memory-cache", { action: "put", key: "feed", value: { items: [1, 2] }, ttlSeconds: 0.3 }),
    ).toEqual({ ok: true });
    expect(await client.call("memory-cache", { action: "get", key: "feed" })).toEqual({
      hit: true,
      value: { items: [1, 2] },
      hits: 1,
    });
    await new Promise((resolve) => setTimeout(resolve, 400));
    expect(await client.call("memory-cache", { action: "get", key: "feed" })).toEqual({ hit: false, value: null });
    await client.call("memory-cache", { action: "put", key: "other", value: 1 });
    expect(await client.call("memory-cache", { action: "delete", key: "other" })).toEqual({ deleted: true });
  });

  it("factorial (Gearman long-running task): poll status and progress by handle, then fetch the result", async () => {
    const job = await client.enqueue("factorial", { n: 12, stepDelayMs: 150 });
    const running = await eventually(async () => {
      const view = await client.status(job.id);
      return view.status === "running" && view.progress ? view : undefined;
    });
    expect(running.progress?.total).toBe(12);
    const result = await client.result(job.id, { timeout: "20s" });
    expect(result).toEqual({ n: 12, factorial: "479001600" });
    const [row] = await env.database.sql`select value from factorials where n = 12`;
    expect(row?.value).toBe("479001600");
  });

  it("primes (PHP-Daemon PrimeNumbers): sieve, primes_among and is_prime", async () => {
    const sieve = (await client.call("primes.sieve", { from: 1000, to: 2000 })) as {
      count: number;
      first: number;
      last: number;
    };
    expect(sieve).toMatchObject({ count: 135, first: 1009, last: 1999 });
    expect(await client.call("primes.primes-among", { numbers: [1, 2, 9, 97, 100, 7919] })).toEqual({
      primes: [2, 97, 7919],
    });
    expect(await client.call("primes.is-prime", { n: 2_147_483_647 })).toEqual({ n: 2_147_483_647, prime: true });
    const job = await client.enqueueAndWait("primes.sieve", { from: 0, to: 100 });
    expect((job as { count: number }).count).toBe(25);
  });
});
