import { randomUUID } from "node:crypto";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { jetstream } from "@nats-io/jetstream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { JetfnClient } from "../../runtime/sdk/client";
import { runCli } from "../helpers/cli";
import { createTestEnvironment, eventually, type TestEnvironment } from "../helpers/environment";

// Durable waits (docs/durable-steps.md, "Wait for an event"): `ctx.waitForEvent` ends the run, the job
// is `awaiting`, and an event of that name whose data matches (or the timeout) starts the next run,
// which answers the steps before the wait from their memos and goes on with the event (or null).

const WAIT_FUNCTIONS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../fixtures/wait-functions");
const SLOW_MS = 60_000;

let env: TestEnvironment;
let client: JetfnClient;
let runsDir: string;

beforeAll(async () => {
  env = await createTestEnvironment();
  await env.database.sql`create table wait_rows (id serial primary key, order_id text not null, step text not null)`;
  client = await env.client();
  runsDir = await mkdtemp(path.join(tmpdir(), "jetfn-wait-runs-"));
  await env.startRuntime({ functionsDir: WAIT_FUNCTIONS });
});

afterAll(async () => {
  await env?.close();
  if (runsDir) await rm(runsDir, { recursive: true, force: true });
});

async function runs(name: string): Promise<string[]> {
  return (await readFile(path.join(runsDir, name), "utf8").catch(() => "")).split("\n").filter(Boolean);
}

async function enqueueOrder(orderId: string, input: Record<string, unknown> = {}): Promise<string> {
  const job = await client.enqueue(
    "awaits-shipment" as never,
    { orderId, runsFile: path.join(runsDir, orderId), ...input } as never,
  );
  return job.id;
}

type StatusView = Awaited<ReturnType<JetfnClient["status"]>>;

async function reaches(id: string, status: string, also: (view: StatusView) => boolean = () => true) {
  return eventually(async () => {
    const view = await client.status(id, { steps: true });
    return view.status === status && also(view) && view;
  }, SLOW_MS);
}

const shipped = (orderId: string, trackingId: string, carrier?: string) =>
  client.emit("shipment.dispatched", { orderId, trackingId, ...(carrier ? { carrier: { name: carrier } } : {}) });

describe("ctx.waitForEvent", () => {
  it("waits, awaiting, for an event whose data matches, then goes on with it in a new run", {
    timeout: 90_000,
  }, async () => {
    const id = await enqueueOrder("o-1");
    const waiting = await reaches(id, "awaiting", (view) => view.steps?.length === 2);
    expect(waiting.steps?.map((step) => [step.key, step.kind, step.status])).toEqual([
      ["order", "step", "succeeded"],
      ["shipment", "wait", "waiting"],
    ]);
    const cli = await runCli(["status", id], { NATS_URL: env.nats.url });
    expect(cli.stdout).toContain(`waits for event: shipment.dispatched until ${waiting.wakeAt}`);
    // Another order's shipment, and another event's name, do not end it.
    await shipped("o-other", "t-other");
    await client.emit("shipment.lost", { orderId: "o-1" });
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    expect((await client.status(id)).status).toBe("awaiting");
    const event = await shipped("o-1", "t-1");
    const done = await reaches(id, "succeeded");
    expect(await runs("o-1")).toEqual(["order", "shipped t-1", "returned"]);
    expect(done).toMatchObject({
      attempts: 1,
      result: { trackingId: "t-1", event: { id: event.id, name: "shipment.dispatched", data: { orderId: "o-1" } } },
    });
    expect(done.steps?.map((step) => [step.key, step.kind, step.status])).toEqual([
      ["order", "step", "succeeded"],
      ["shipment", "wait", "matched"],
      ["after", "step", "succeeded"],
    ]);
    const rows = await env.database.sql`select step from wait_rows where order_id = 'o-1' order by id`;
    expect(rows.map((row) => row.step)).toEqual(["order", "after"]);
  });

  it("takes an event the step before the wait emitted, before the wait began", { timeout: 60_000 }, async () => {
    const id = await enqueueOrder("o-early", { emitFirst: true });
    await reaches(id, "succeeded");
    expect(await runs("o-early")).toEqual(["order", "shipped early-o-early", "returned"]);
  });

  it("matches every path of its match, nested ones too", { timeout: 60_000 }, async () => {
    const id = await enqueueOrder("o-nested", { carrier: "ups" });
    await reaches(id, "awaiting");
    await shipped("o-nested", "t-dhl", "dhl");
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    expect((await client.status(id)).status).toBe("awaiting");
    await shipped("o-nested", "t-ups", "ups");
    await reaches(id, "succeeded");
    expect(await runs("o-nested")).toEqual(["order", "shipped t-ups", "returned"]);
  });

  it("ends every wait one event matches", { timeout: 90_000 }, async () => {
    const ids = await Promise.all(
      ["a", "b", "c"].map((n) => enqueueOrder("o-many", { runsFile: path.join(runsDir, `o-many-${n}`) })),
    );
    await Promise.all(ids.map((id) => reaches(id, "awaiting")));
    await shipped("o-many", "t-many");
    const views = await Promise.all(ids.map((id) => reaches(id, "succeeded")));
    expect(views.map((view) => (view.result as { trackingId: string }).trackingId)).toEqual([
      "t-many",
      "t-many",
      "t-many",
    ]);
  });

  it("is ended by a matching event stored beside one Postgres cannot hold as jsonb", { timeout: 60_000 }, async () => {
    const id = await enqueueOrder("o-poison");
    await reaches(id, "awaiting");
    // Any client may publish this: a NUL character, which jsonb refuses, in one event of the batch.
    const js = jetstream(client.connection);
    await Promise.all([
      js.publish("fn.event.shipment.dispatched", '{"orderId": "o-none", "trackingId": "t-\\u0000"}'),
      js.publish("fn.event.shipment.dispatched", '{"orderId": "o-poison", "trackingId": "t-poison"}'),
    ]);
    await reaches(id, "succeeded");
    expect(await runs("o-poison")).toEqual(["order", "shipped t-poison", "returned"]);
  });

  it("is caught up by the runtimes' sweep when its own runtime never read the events stored before it", {
    timeout: 60_000,
  }, async () => {
    // The event is stored (and read, if a consumer of its name exists) while nothing waits for it.
    await shipped("o-swept", "t-swept");
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    // A wait recorded as a runtime does it, by one that died before its catch-up.
    const id = randomUUID();
    const input = { orderId: "o-swept", runsFile: path.join(runsDir, "o-swept") };
    await env.database.sql`select jetfn.await_event(${id}, 'awaits-shipment', 1, ${env.database.sql.json(input)},
      now() - interval '1 minute', now(), 1, null, null, null, null, 'shipment', 'shipment.dispatched',
      '{orderId}'::text[], '["o-swept"]'::jsonb, now() + interval '1 hour', '1t', null::text)`;
    const done = await reaches(id, "succeeded");
    expect(done.result).toMatchObject({ trackingId: "t-swept" });
    expect(await runs("o-swept")).toEqual(["order", "shipped t-swept", "returned"]);
  });

  it("follows a step retried before it: an event or its timeout ends the wait, not the step's retry", {
    timeout: 90_000,
  }, async () => {
    const [matched, late] = await Promise.all([
      enqueueOrder("o-retried", { failOrderOnce: true }),
      enqueueOrder("o-retried-late", { failOrderOnce: true, timeout: "3s" }),
    ]);
    const waiting = await reaches(matched, "awaiting", (view) => view.steps?.length === 2);
    expect(waiting.steps?.map((step) => [step.key, step.status, step.attempts])).toEqual([
      ["order", "succeeded", 2],
      ["shipment", "waiting", 1],
    ]);
    await shipped("o-retried", "t-retried");
    const done = await reaches(matched, "succeeded");
    expect(done.result).toMatchObject({ trackingId: "t-retried" });
    expect(await runs("o-retried")).toEqual(["order", "order", "shipped t-retried", "returned"]);
    const timedOut = await reaches(late, "succeeded");
    expect(timedOut.result).toEqual({ trackingId: null, event: null });
    expect(await runs("o-retried-late")).toEqual(["order", "order", "timed out", "returned"]);
    // The failed attempt's row was rolled back with it.
    const rows = await env.database.sql`select step from wait_rows where order_id = 'o-retried' order by id`;
    expect(rows.map((row) => row.step)).toEqual(["order", "after"]);
  });

  it("goes on with null once its timeout comes first", { timeout: 60_000 }, async () => {
    const id = await enqueueOrder("o-late", { timeout: "2s" });
    const done = await reaches(id, "succeeded");
    expect(await runs("o-late")).toEqual(["order", "timed out", "returned"]);
    expect(done.result).toEqual({ trackingId: null, event: null });
    expect(done.steps?.map((step) => [step.key, step.status])).toEqual([
      ["order", "succeeded"],
      ["shipment", "timed_out"],
      ["after", "succeeded"],
    ]);
    // An event after the timeout changes nothing.
    await shipped("o-late", "t-late");
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    expect(await runs("o-late")).toEqual(["order", "timed out", "returned"]);
  });

  it("is ended by a cancel: no event runs it on", { timeout: 60_000 }, async () => {
    const id = await enqueueOrder("o-cancel");
    await reaches(id, "awaiting");
    expect((await client.cancel(id, { reason: "order withdrawn" })).status).toBe("cancelled");
    await shipped("o-cancel", "t-cancel");
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    expect(await runs("o-cancel")).toEqual(["order"]);
    expect((await client.status(id)).status).toBe("cancelled");
    // Its wait no longer waits: nothing stays in the matcher's index.
    const waits = await env.database.sql`select status from jetfn.steps where invocation_id = ${id} and kind = 'wait'`;
    expect(waits).toEqual([{ status: "timed_out" }]);
  });

  it("refuses options it cannot wait on, and a wait in a call, with E_STEP_INVALID", { timeout: 60_000 }, async () => {
    await expect(
      client.call("awaits-shipment" as never, { orderId: "o-call", runsFile: path.join(runsDir, "o-call") } as never),
    ).rejects.toMatchObject({ code: "E_STEP_INVALID", message: expect.stringContaining("works in jobs only") });
    const id = await enqueueOrder("o-bad", { timeout: "400d" });
    const dead = await reaches(id, "dead");
    expect(dead.error).toMatchObject({ code: "E_STEP_INVALID", message: expect.stringContaining("at most a year") });
  });
});
