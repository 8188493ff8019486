import { describe, expect, it } from "vitest";
import { runCli } from "../helpers/cli";
import { useItemsEnvironment } from "../helpers/items-environment";

const items = useItemsEnvironment();

describe("singletons, with two runtimes", () => {
  it("folds enqueues into the job holding the key while it is queued or running, then takes a new one", async () => {
    const { env, client, ended, namesLike } = items();
    await Promise.all([env.startRuntime(), env.startRuntime()]);
    const singleton = { key: "nightly-report" };
    // The holder runs 5 s so it still holds the key when the five repeats arrive on a loaded machine
    // (with 1.5 s it had once ended before the last of them).
    const first = await client.enqueue("write-then-wait", { name: "held-0", ms: 5_000 }, { singleton });
    expect(first.existing).toBe(false);
    const repeats = await Promise.all(
      [1, 2, 3, 4, 5].map((n) => client.enqueue("write-then-wait", { name: `held-${n}`, ms: 0 }, { singleton })),
    );
    for (const repeat of repeats) expect(repeat).toMatchObject({ id: first.id, existing: true });
    expect((await ended(first.id)).status).toBe("succeeded");
    const next = await client.enqueue("write-then-wait", { name: "held-6", ms: 0 }, { singleton });
    expect(next).toMatchObject({ existing: false });
    expect(next.id).not.toBe(first.id);
    expect((await ended(next.id)).status).toBe("succeeded");
    expect(await namesLike("held-")).toEqual(["held-0", "held-6"]);
  });

  it("stores one job when many enqueues race for a free key on both runtimes", async () => {
    const { env, client, ended, namesLike } = items();
    await Promise.all([env.startRuntime(), env.startRuntime()]);
    const other = await env.client();
    const racing = await Promise.all(
      Array.from({ length: 12 }, (_, n) =>
        (n % 2 ? client : other).enqueue(
          "write-then-wait",
          { name: `race-${n}`, ms: 2_000 },
          { singleton: { key: "race" } },
        ),
      ),
    );
    const ids = new Set(racing.map((job) => job.id));
    expect(ids.size).toBe(1);
    expect(racing.filter((job) => !job.existing)).toHaveLength(1);
    expect((await ended([...ids][0] as string)).status).toBe("succeeded");
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(await namesLike("race-")).toHaveLength(1);
  });

  it("keeps the key held across a restart of every runtime, and frees it when the holder is cancelled", async () => {
    const { env, client, ended, namesLike } = items();
    const runtimes = await Promise.all([env.startRuntime(), env.startRuntime()]);
    const singleton = { key: "restart" };
    const held = await client.enqueue("insert-item", { name: "kept-0" }, { singleton, delay: "3s" });
    await Promise.all(runtimes.map((runtime) => runtime.stop()));
    await env.startRuntime();
    expect(await client.enqueue("insert-item", { name: "kept-1" }, { singleton })).toMatchObject({
      id: held.id,
      existing: true,
    });
    await client.cancel(held.id);
    const after = await client.enqueue("insert-item", { name: "kept-2" }, { singleton });
    expect(after).toMatchObject({ existing: false });
    expect((await ended(after.id)).status).toBe("succeeded");
    expect(await namesLike("kept-")).toEqual(["kept-2"]);
  });

  it("prints the holder's id from the CLI and says nothing new was enqueued", async () => {
    const { env, client } = items();
    await env.startRuntime();
    // The holder waits 25 s (cancelled at the end), so it still holds the key after three CLI runs on
    // a loaded machine; with 10 s it had ended before the third at load 16.
    const cli = (name: string) =>
      runCli(["enqueue", "write-then-wait", JSON.stringify({ name, ms: 25_000 }), "--singleton", "cli"], {
        NATS_URL: env.nats.url,
      });
    const first = await cli("cli-0");
    const second = await cli("cli-1");
    expect([first.code, second.code]).toEqual([0, 0]);
    expect(second.stdout).toBe(first.stdout);
    expect(second.stderr).toMatch(/already holds singleton key "cli"/);
    const json = await runCli(
      ["enqueue", "write-then-wait", JSON.stringify({ name: "cli-2", ms: 0 }), "--singleton", "cli", "--json"],
      { NATS_URL: env.nats.url },
    );
    expect(JSON.parse(json.stdout)).toMatchObject({ id: first.stdout.trim(), existing: true });
    await client.cancel(first.stdout.trim());
  });
});
