import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { claimKey, openJobKeys } from "../../runtime/flow/job-keys";
import type { JetfnClient } from "../../runtime/sdk/client";
import { eventually, type TestEnvironment } from "../helpers/environment";
import { createItemsEnvironment, type ItemsEnvironment } from "../helpers/items-environment";

// Singleton and debounce keys given to ctx.enqueue: the handler's transaction writes them to the
// outbox, and the relay claims the key (as the enqueue API does) only once it has committed.
let env: TestEnvironment;
let client: JetfnClient;
let ended: ItemsEnvironment["ended"];
let namesLike: ItemsEnvironment["namesLike"];

beforeAll(async () => {
  ({ env, client, ended, namesLike } = await createItemsEnvironment());
});

afterAll(async () => {
  await env?.close();
});

/** Runs enqueue-keyed as a job and returns the ids its ctx.enqueue calls gave (its relay ran before the result). */
async function enqueueKeyed(input: Record<string, unknown>): Promise<string[]> {
  const { ids } = (await client.enqueueAndWait("enqueue-keyed", input, { timeout: "60s" })) as { ids: string[] };
  return ids;
}

describe("keys through ctx.enqueue, with two runtimes", () => {
  it("enqueues one job for two singleton enqueues of one transaction; the other id ends superseded, naming the holder", {
    timeout: 90_000,
  }, async () => {
    await Promise.all([env.startRuntime(), env.startRuntime()]);
    // The holder waits 8 s, so it still holds the key when a later handler's row is enqueued.
    const [holder, folded] = await enqueueKeyed({ name: "single", count: 2, ms: 8_000, singleton: "ob-report" });
    expect((await ended(folded as string)).status).toBe("superseded");
    const view = await client.status(folded as string);
    expect(view.error).toMatchObject({ code: "E_SINGLETON_HELD", message: expect.stringContaining(holder as string) });
    await expect(client.result(folded as string)).rejects.toMatchObject({ code: "E_SINGLETON_HELD" });
    // A later handler's enqueue, while the holder still runs, folds into it too.
    const [later] = await enqueueKeyed({ name: "single-later", singleton: "ob-report" });
    expect((await ended(holder as string, 30_000)).status).toBe("succeeded");
    expect((await ended(later as string)).status).toBe("superseded");
    expect((await namesLike("single")).sort()).toEqual(["single", "single-0", "single-later"]);
  });

  it("runs only the last of debounced enqueues from two transactions; the earlier ones end superseded", {
    timeout: 90_000,
  }, async () => {
    await Promise.all([env.startRuntime(), env.startRuntime()]);
    const debounce = { key: "ob-doc:7", period: "5s" };
    const first = await enqueueKeyed({ name: "deb-a", count: 2, debounce });
    const [last] = await enqueueKeyed({ name: "deb-b", debounce });
    for (const [n, id] of first.entries()) {
      const view = await ended(id);
      expect(view.status).toBe("superseded");
      const by = n === 0 ? first[1] : last;
      expect(view.error).toMatchObject({ code: "E_SUPERSEDED", message: expect.stringContaining(by as string) });
    }
    expect((await ended(last as string, 30_000)).status).toBe("succeeded");
    expect((await namesLike("deb-")).sort()).toEqual(["deb-a", "deb-b", "deb-b-0"]);
  });

  it("claims a key only once the handler's transaction committed", async () => {
    await env.startRuntime();
    const keys = await openJobKeys(client.connection);
    const claimed = async (kind: "singleton" | "debounce") =>
      (await keys.get(claimKey(kind, "write-then-wait", "ob-rolled")))?.json<{ id: string }>().id;
    for (const [kind, keyed] of [
      ["singleton", { singleton: "ob-rolled" }],
      ["debounce", { debounce: { key: "ob-rolled", period: "100ms" } }],
    ] as const) {
      await expect(
        client.enqueueAndWait("enqueue-keyed", { name: `rolled-${kind}`, ...keyed, fail: true }),
      ).rejects.toMatchObject({ code: "E_NON_RETRYABLE" });
      expect(await claimed(kind)).toBeUndefined();
      // The same enqueue from a handler that commits claims the key for the id ctx.enqueue gave.
      const [id] = await enqueueKeyed({ name: `kept-${kind}`, ...keyed });
      // The relay hands keyed rows on one after another: the claim may land just after the result.
      expect(await eventually(() => claimed(kind))).toBe(id);
      expect((await ended(id as string)).status).toBe("succeeded");
    }
    expect(await namesLike("rolled-")).toEqual([]);
    expect((await namesLike("kept-")).sort()).toEqual([
      "kept-debounce",
      "kept-debounce-0",
      "kept-singleton",
      "kept-singleton-0",
    ]);
  });
});
