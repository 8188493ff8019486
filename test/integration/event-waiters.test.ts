import {
  AckPolicy,
  DeliverPolicy,
  type JetStreamClient,
  type JetStreamManager,
  jetstream,
  jetstreamManager,
} from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import pino from "pino";
import { afterAll, beforeAll, expect, it } from "vitest";
import { connectDatabase, type DatabaseClient } from "../../runtime/db/client";
import { RESUME_HEADER } from "../../runtime/invocation/resume-tag";
import { EVENT_STREAM, eventSubject } from "../../runtime/nats/event-stream";
import type { OutboxMessage } from "../../runtime/outbox/outbox-message";
import { EventWaiters, WATCH_LOCK_SPACE, waitConsumerName } from "../../runtime/triggers/event-waiters";
import { createTestEnvironment, eventually, type TestEnvironment } from "../helpers/environment";
import { stopWhenTestEnds } from "../helpers/test-scope";

// The consumers of durable waits (runtime/triggers/event-waiters.ts): one per event name, only while
// a step waits for an event of that name; made from the earliest wait's after_at, dropped once no step
// waits, both under the name's Postgres lock, so that no wait is left without its events read.

let env: TestEnvironment;
let nc: NatsConnection;
let js: JetStreamClient;
let manager: JetStreamManager;
/** The runtime's kind of pool (connectDatabase: drizzle's type parsers, which the waiters' statements expect). */
let database: DatabaseClient;

beforeAll(async () => {
  env = await createTestEnvironment();
  // A runtime's start makes the schema and the events stream; these tests run waiters of their own.
  const runtime = await env.startRuntime({}, { laterTestsUseIt: true });
  await runtime.stop();
  nc = await connect({ servers: env.nats.url });
  js = jetstream(nc);
  manager = await jetstreamManager(nc);
  database = connectDatabase({ url: env.database.url, poolSize: 4 });
});

afterAll(async () => {
  await database?.close();
  await nc?.close();
  await env?.close();
});

function waiters({
  idleDropMs = 0,
  ackWaitMs,
  publishMs = 0,
}: {
  idleDropMs?: number;
  ackWaitMs?: number;
  publishMs?: number;
} = {}): {
  waiters: EventWaiters;
  published: OutboxMessage[];
  logs: LogLine[];
} {
  const logs: LogLine[] = [];
  const published: OutboxMessage[] = [];
  const waiters = new EventWaiters({
    sql: database.sql,
    js,
    manager,
    logger: pino({ level: "info" }, { write: (line: string) => void logs.push(JSON.parse(line)) }),
    resumeSecret: "event-waiters-test-secret",
    publishCommitted: async (messages) => {
      if (publishMs > 0) await new Promise((resolve) => setTimeout(resolve, publishMs));
      published.push(...messages);
    },
    sweepMs: 3_600_000, // Swept by hand.
    idleDropMs,
    listingEvery: 1,
    ackWaitMs,
  });
  stopWhenTestEnds(() => waiters.stop());
  return { waiters, published, logs };
}

/** Records a waiting step of a new job `id` for `event` whose data's `orderId` is `orderId`. */
async function awaitEvent(id: string, event: string, orderId: string): Promise<void> {
  await env.database
    .sql`select jetfn.await_event(${id}, 'orders.fulfil', 1, '{}'::jsonb, now() - interval '1 minute', now(), 7, null, null,
    null, null, 'wait', ${event}, '{orderId}'::text[], ${JSON.stringify([orderId])}::text::jsonb, now() + interval '1 hour',
    '1t', null::text)`;
}

async function stepStatus(id: string): Promise<string | undefined> {
  const [row] = await env.database.sql`select status from jetfn.steps where invocation_id = ${id} and key = 'wait'`;
  return row?.status as string | undefined;
}

/** The waits' consumers on the events stream: of the names given, or all. */
async function waitConsumers(...events: string[]): Promise<string[]> {
  const names: string[] = [];
  const of = new Set(events.map(waitConsumerName));
  for await (const info of manager.consumers.list(EVENT_STREAM)) {
    if (info.name.startsWith("jetfn-wait") && (of.size === 0 || of.has(info.name))) names.push(info.name);
  }
  return names.sort();
}

interface LogLine {
  msg: string;
  event?: string;
}

const emit = (event: string, orderId: string) => js.publish(eventSubject(event), JSON.stringify({ orderId }));

it("reads no event while no step waits, and the waited name's events from the earliest wait on, until none waits", async () => {
  const { waiters: w, published } = waiters();
  await w.start();
  expect(w.watched).toEqual([]);
  expect(await waitConsumers()).toEqual([]);

  await awaitEvent("ew-first", "parcel.sent", "o-1");
  // Stored after the wait began and before its name is watched: the consumer made for it starts earlier.
  await emit("parcel.sent", "o-1");
  await emit("parcel.lost", "o-1");
  expect(await w.watch("parcel.sent")).toBe(true);
  expect(await waitConsumers()).toEqual([waitConsumerName("parcel.sent")]);
  expect(w.watched).toEqual(["parcel.sent"]);
  await eventually(async () => (await stepStatus("ew-first")) === "matched");
  expect(published.map((message) => [message.subject, RESUME_HEADER in message.headers])).toEqual([
    [expect.stringContaining("orders.fulfil"), true],
  ]);
  // Watched again while it is made: nothing new.
  await awaitEvent("ew-second", "parcel.sent", "o-2");
  expect(await w.watch("parcel.sent")).toBe(false);

  // Once no step waits for one, the sweep drops it and this runtime reads it no more.
  await env.database.sql`update jetfn.steps set status = 'timed_out' where invocation_id = 'ew-second'`;
  await w.sweep();
  expect(await waitConsumers()).toEqual([]);
  expect(w.watched).toEqual([]);
});

it("drops a name's consumer only under the name's lock: a wait committed while the drop waits keeps it", async () => {
  const { waiters: w } = waiters();
  await awaitEvent("ew-lock-1", "crate.packed", "o-1");
  await w.watch("crate.packed");
  await env.database.sql`update jetfn.steps set status = 'timed_out' where invocation_id = 'ew-lock-1'`;

  // Another runtime's watch holds the name's lock (shared): the sweep's drop waits for it.
  const holder = await env.database.sql.reserve();
  try {
    await holder`begin`;
    await holder`select pg_advisory_xact_lock_shared(${WATCH_LOCK_SPACE}, hashtext('crate.packed'))`;
    const sweeping = w.sweep();
    await eventually(async () => {
      const [row] = await env.database.sql`
        select exists (select from pg_locks where locktype = 'advisory' and not granted and classid = ${WATCH_LOCK_SPACE})
          as waits`;
      return row?.waits === true;
    });
    await awaitEvent("ew-lock-2", "crate.packed", "o-2");
    await holder`commit`;
    await sweeping;
  } finally {
    holder.release();
  }
  expect(await waitConsumers("crate.packed")).toEqual([waitConsumerName("crate.packed")]);
  await emit("crate.packed", "o-2");
  await eventually(async () => (await stepStatus("ew-lock-2")) === "matched");
  await w.sweep();
  expect(await waitConsumers("crate.packed")).toEqual([]);
});

it("makes a consumer deleted while steps wait again, from the earliest wait: an event stored meanwhile still counts", async () => {
  const { waiters: w } = waiters();
  await awaitEvent("ew-deleted", "box.opened", "o-9");
  await w.watch("box.opened");
  await manager.consumers.delete(EVENT_STREAM, waitConsumerName("box.opened"));
  await emit("box.opened", "o-9");
  await w.sweep();
  expect(await waitConsumers("box.opened")).toEqual([waitConsumerName("box.opened")]);
  await eventually(async () => (await stepStatus("ew-deleted")) === "matched");
  await w.sweep();
  expect(await waitConsumers("box.opened")).toEqual([]);
});

it("drops consumers nothing reads or waits for, and the version before's shared one once nothing pulls from it", async () => {
  const orphan = waitConsumerName("lid.closed");
  await manager.consumers.add(EVENT_STREAM, {
    durable_name: orphan,
    filter_subject: eventSubject("lid.closed"),
    ack_policy: AckPolicy.Explicit,
  });
  await manager.consumers.add(EVENT_STREAM, {
    durable_name: "jetfn-waiters",
    filter_subject: eventSubject(">"),
    deliver_policy: DeliverPolicy.New,
    ack_policy: AckPolicy.Explicit,
  });
  // A runtime of the version before reads it.
  const old = await (await js.consumers.get(EVENT_STREAM, "jetfn-waiters")).consume({ max_messages: 8 });
  const reading = (async () => {
    for await (const message of old) message.ack();
  })();
  const pulls = async () => (await manager.consumers.info(EVENT_STREAM, "jetfn-waiters")).num_waiting;
  await eventually(async () => (await pulls()) > 0);
  const { waiters: w } = waiters();
  await w.sweep();
  await w.sweep();
  expect(await waitConsumers()).toEqual(["jetfn-waiters"]);

  old.stop();
  await reading;
  await eventually(async () => (await pulls()) === 0);
  // Once nothing pulls, two listings in a row (nothing delivered in between) drop it.
  await w.sweep();
  expect(await waitConsumers()).toEqual(["jetfn-waiters"]);
  await w.sweep();
  expect(await waitConsumers()).toEqual([]);
});

it("catches up a wait whose name is read already: an event stored before it committed counts", async () => {
  const { waiters: w } = waiters();
  await awaitEvent("ew-read-1", "tray.loaded", "o-1");
  expect(await w.watch("tray.loaded")).toBe(true);
  // Read and matched with nothing: no step waits for o-2 yet.
  const { seq } = await emit("tray.loaded", "o-2");
  await eventually(
    async () =>
      (await manager.consumers.info(EVENT_STREAM, waitConsumerName("tray.loaded"))).ack_floor.stream_seq >= seq,
  );
  await awaitEvent("ew-read-2", "tray.loaded", "o-2");
  const [row] = await env.database.sql`select after_at from jetfn.steps where invocation_id = 'ew-read-2'`;
  const resolved = await w.catchUpWait({
    invocationId: "ew-read-2",
    key: "wait",
    event: "tray.loaded",
    afterAt: (row?.after_at as Date)?.toISOString(),
  });
  expect(resolved).toBe(1);
  expect(await stepStatus("ew-read-2")).toBe("matched");
});

it("watches every other name when one name's consumer cannot be made, and stops reading when stopped", async () => {
  const { waiters: w, logs } = waiters();
  // No runtime records such a name (waitSpec refuses it); a row written some other way must not jam the sweep.
  await awaitEvent("ew-bad-1", "a bad name", "o-1");
  await awaitEvent("ew-good-1", "lamp.lit", "o-1");
  await w.sweep();
  expect(await waitConsumers("lamp.lit")).toEqual([waitConsumerName("lamp.lit")]);
  expect(w.watched).toContain("lamp.lit");
  expect(logs.filter((line) => line.event === "a bad name").map((line) => line.msg)).toEqual([
    "Sweeping durable waits failed; trying again later.",
  ]);
  await emit("lamp.lit", "o-1");
  await eventually(async () => (await stepStatus("ew-good-1")) === "matched");
  await env.database.sql`update jetfn.steps set status = 'timed_out' where invocation_id = 'ew-bad-1'`;
  await w.stop();
  expect(w.watched).toEqual([]);
});

it("ends every wait over rounds of waits made and dropped while another runtime sweeps", async () => {
  const { waiters: a } = waiters();
  const { waiters: b } = waiters();
  let sweeping = true;
  const sweeps = (async () => {
    while (sweeping) await a.sweep();
  })();
  try {
    for (let round = 1; round <= 20; round++) {
      const id = `ew-round-${round}`;
      await awaitEvent(id, "bell.rang", `o-${round}`);
      const [row] = await env.database.sql`select after_at from jetfn.steps where invocation_id = ${id}`;
      await b.catchUpWait({
        invocationId: id,
        key: "wait",
        event: "bell.rang",
        afterAt: (row?.after_at as Date)?.toISOString(),
      });
      await emit("bell.rang", `o-${round}`);
      await eventually(async () => (await stepStatus(id)) === "matched");
    }
  } finally {
    sweeping = false;
    await sweeps;
  }
});

it("drops a name's consumer only once no step waited for one over idleDropMs", async () => {
  const { waiters: w } = waiters({ idleDropMs: 1_500 });
  await awaitEvent("ew-idle-1", "kettle.boiled", "o-1");
  await w.watch("kettle.boiled");
  await env.database.sql`update jetfn.steps set status = 'timed_out' where invocation_id = 'ew-idle-1'`;
  await w.sweep();
  expect(await waitConsumers("kettle.boiled")).toEqual([waitConsumerName("kettle.boiled")]);
  await new Promise((resolve) => setTimeout(resolve, 1_600));
  await w.sweep();
  expect(await waitConsumers("kettle.boiled")).toEqual([]);
  expect(w.watched).not.toContain("kettle.boiled");
});

it("keeps an event it matches with many waits from coming again while the matches commit", {
  timeout: 120_000,
}, async () => {
  // Each match's publish takes at least a millisecond: 1,500 of them outlast the 1 s ack wait.
  const { waiters: w } = waiters({ ackWaitMs: 1_000, publishMs: 1 });
  const WAITS = 1_500;
  await env.database.sql`select jetfn.await_event('ew-many-' || g, 'orders.fulfil', 1, '{}'::jsonb,
    now() - interval '1 minute', now(), 7, null, null, null, null, 'wait', 'drum.beat', '{orderId}'::text[],
    '["all"]'::text::jsonb, now() + interval '1 hour', '1t', null::text)
    from generate_series(1, ${WAITS}::integer) g`;
  await w.watch("drum.beat");
  const started = performance.now();
  await emit("drum.beat", "all");
  await eventually(async () => {
    const [row] = await env.database.sql`
      select count(*)::int as n from jetfn.steps where event = 'drum.beat' and status = 'matched'`;
    return row?.n === WAITS;
  }, 100_000);
  // Longer than the ack wait, or the test shows nothing: one event ended them all, delivered once.
  expect(performance.now() - started).toBeGreaterThan(1_000);
  const info = await manager.consumers.info(EVENT_STREAM, waitConsumerName("drum.beat"));
  expect({ delivered: info.delivered.consumer_seq, redelivered: info.num_redelivered }).toEqual({
    delivered: 1,
    redelivered: 0,
  });
});
