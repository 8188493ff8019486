import { jetstreamManager } from "@nats-io/jetstream";
import { drizzle } from "drizzle-orm/postgres-js";
import { afterAll, beforeAll, expect, it } from "vitest";
import { enqueueInTransaction } from "../../runtime/db/outbox";
import { claimKey, openJobKeys } from "../../runtime/flow/job-keys";
import type { JetfnClient } from "../../runtime/sdk/client";
import { eventually, type TestEnvironment } from "../helpers/environment";
import { createItemsEnvironment, type ItemsEnvironment } from "../helpers/items-environment";

// A job row with a singleton or debounce key makes the relay claim the key with the runtime's NATS
// rights. Apps (and handler code) write outbox rows, so the key is checked as the enqueue API checks
// it: the database refuses a bad one at insert, and the relay sets aside a row that got in anyway,
// without touching the key bucket, while the rows around it go out. Enqueueing a row again (a
// relay that crashed before deleting it) gives the same job, never a second one.
let env: TestEnvironment;
let client: JetfnClient;
let ended: ItemsEnvironment["ended"];
let namesLike: ItemsEnvironment["namesLike"];

const CONSTRAINT = "outbox_row_is_a_jetfn_message";
/** Over the server's control-line limit as a key-value subject: once, such a key closed the runtime's connection. */
const LONG_KEY = "k".repeat(5_000);
/** Shaped like the ids the runtime derives itself, which no publisher may choose. */
const RESERVED_ID = "3f2a9c1e-77b0-8a41-9c3d-0123456789ab";

beforeAll(async () => {
  ({ env, client, ended, namesLike } = await createItemsEnvironment());
});

afterAll(async () => {
  await env?.close();
});

function keyedRow(id: string, name: string, headers: Record<string, string>) {
  return env.database.sql`insert into jetfn.outbox (id, subject, headers, body)
    values (${`insert-item:${id}`}, 'fn.job.insert-item', ${JSON.stringify({ "Jetfn-Id": id, ...headers })}::text::jsonb,
            ${JSON.stringify({ name })})`;
}

it("refuses a row with a bad key at insert, even from a superuser", async () => {
  const cases: Record<string, string>[] = [
    { "Jetfn-Singleton-Key": LONG_KEY },
    { "Jetfn-Singleton-Key": "tenant.>" },
    { "Jetfn-Debounce-Key": "doc 7", "Jetfn-Debounce-Period": "1000" },
    { "Jetfn-Debounce-Key": "doc:7", "Jetfn-Debounce-Period": "1000", "Jetfn-Debounce-Max-Wait": "10" },
  ];
  for (const headers of cases) {
    await expect(keyedRow("bad-key-01", "bad-key", headers)).rejects.toThrow(CONSTRAINT);
  }
});

it("sets aside keyed rows it must not enqueue, claims none of their keys, and enqueues the rows around them", {
  timeout: 90_000,
}, async () => {
  const runtime = await env.startRuntime();
  const setAside: { id: string; reason: string }[] = [];
  runtime.events.on("outbox:set-aside", (event) => setAside.push(event));
  const db = drizzle(env.database.sql);
  await env.database.sql.begin(async (tx) => {
    await tx.unsafe(`alter table jetfn.outbox drop constraint if exists ${CONSTRAINT}`);
  });
  const good = await db.transaction((tx) => enqueueInTransaction(tx, "insert-item", { name: "around-plain" }));
  // Written by hand, as a hostile app would: with the constraint gone, only the relay checks them.
  await keyedRow("evil-long-key", "evil-long", { "Jetfn-Singleton-Key": LONG_KEY });
  await keyedRow("evil-wildcard", "evil-wildcard", { "Jetfn-Debounce-Key": "doc.*", "Jetfn-Debounce-Period": "1000" });
  await keyedRow(RESERVED_ID, "evil-reserved", { "Jetfn-Singleton-Key": "reserved" });
  const after = await db.transaction(async (tx) => ({
    singleton: await enqueueInTransaction(tx, "insert-item", { name: "around-single" }, { singleton: { key: "ok" } }),
    debounced: await enqueueInTransaction(
      tx,
      "insert-item",
      { name: "around-debounced" },
      { debounce: { key: "ok", period: "200ms", maxWait: "1s" } },
    ),
  }));

  await eventually(() => setAside.length >= 3, 30_000);
  await env.database.sql.unsafe(
    `alter table jetfn.outbox add constraint ${CONSTRAINT} check (jetfn.outbox_row_problem(id, subject, headers, body) is null)`,
  );
  for (const id of [good.id, after.singleton.id, after.debounced.id])
    expect((await ended(id)).status).toBe("succeeded");
  expect((await namesLike("around-")).sort()).toEqual(["around-debounced", "around-plain", "around-single"]);

  const reasons = Object.fromEntries(setAside.map((row) => [row.id, row.reason]));
  expect(Object.keys(reasons).sort()).toEqual(
    [`insert-item:${RESERVED_ID}`, "insert-item:evil-long-key", "insert-item:evil-wildcard"].sort(),
  );
  expect(reasons["insert-item:evil-long-key"]).toMatch(/singleton or debounce key is 1-128 letters/);
  expect(reasons["insert-item:evil-wildcard"]).toMatch(/singleton or debounce key is 1-128 letters/);
  expect(reasons[`insert-item:${RESERVED_ID}`]).toMatch(/keyed enqueue was refused: .*derives itself/);
  expect(runtime.logs.matching("Outbox row set aside").length).toBe(3);
  // No claim for the refused keys; the reserved id's claim was given back when its publish was refused.
  const keys = await openJobKeys(client.connection);
  expect(await keys.get(claimKey("debounce", "insert-item", "doc.*"))).toBeNull();
  expect((await keys.get(claimKey("singleton", "insert-item", "reserved")))?.operation ?? "none").not.toBe("PUT");
  expect(await namesLike("evil-")).toEqual([]);
  expect(client.connection.isClosed()).toBe(false);
});

it("gives the same job when a keyed row is enqueued again, as after a relay crash before its delete", {
  timeout: 90_000,
}, async () => {
  await env.startRuntime();
  const db = drizzle(env.database.sql);
  const manager = await jetstreamManager(client.connection);
  const stored = async () =>
    Promise.all(
      ["JETFN_JOBS", "JETFN_JOBS_DELAYED"].map(async (name) => (await manager.streams.info(name)).state.last_seq),
    );
  const rows = {
    singleton: { id: "again-single-01", options: { singleton: { key: "again" } } },
    debounced: { id: "again-debounced-01", options: { debounce: { key: "again", period: "200ms" } } },
  };
  const write = async (row: (typeof rows)[keyof typeof rows], name: string) => {
    await db.transaction((tx) => enqueueInTransaction(tx, "insert-item", { name }, { id: row.id, ...row.options }));
    await eventually(async () => (await env.database.sql`select id from jetfn.outbox`).length === 0, 15_000);
  };
  const keys = await openJobKeys(client.connection);
  for (const [kind, row] of Object.entries(rows)) {
    await write(row, `again-${kind}`);
    expect((await ended(row.id)).status).toBe("succeeded");
    // Enqueued through its key: the claim names the row's job.
    const claim = await keys.get(claimKey(kind === "singleton" ? "singleton" : "debounce", "insert-item", "again"));
    expect(claim?.json<{ id: string }>().id).toBe(row.id);
    const before = await stored();
    // The same row again: the relay enqueues it as if for the first time.
    await write(row, `again-${kind}`);
    expect(await stored()).toEqual(before);
    expect((await client.status(row.id)).status).toBe("succeeded");
  }
  expect((await namesLike("again-")).sort()).toEqual(["again-debounced", "again-singleton"]);
});
