import { type JetStreamManager, jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, expect, it, onTestFinished } from "vitest";
import { StreamPublisher } from "../../runtime/nats/stream-publisher";
import { startOutboxRelay } from "../../runtime/outbox/outbox-relay";
import { createEmitter } from "../../runtime/triggers/events";
import { runCli } from "../helpers/cli";
import { createTestEnvironment, eventually, type TestEnvironment } from "../helpers/environment";
import { captureLogs } from "../helpers/logs";

// A row that meets the outbox rules but that JetStream refuses every time (here: larger than the
// stream's max_msg_size) was retried every second forever. It must not hold up the rows behind
// it, must be tried again only with back-off, and must end set aside, once, for an operator.
let env: TestEnvironment;
let nc: NatsConnection;
let manager: JetStreamManager;

const STREAM = "JETFN_JOBS";

beforeAll(async () => {
  env = await createTestEnvironment();
  nc = await connect({ servers: env.nats.url });
  manager = await jetstreamManager(nc);
});

afterAll(async () => {
  await nc?.close();
  await env?.close();
});

async function storedJobs(): Promise<number> {
  return (await manager.streams.info(STREAM)).state.messages;
}

async function setMaxMessageSize(bytes: number): Promise<void> {
  const { config } = await manager.streams.info(STREAM);
  await manager.streams.update(STREAM, { ...config, max_msg_size: bytes });
}

function jobRow(id: string, body: string) {
  return { id: `nobody-serves-this:${id}`, subject: "fn.job.nobody-serves-this", headers: { "Jetfn-Id": id }, body };
}

it("sets aside a row JetStream keeps refusing, without holding up the rows behind it", {
  timeout: 90_000,
}, async () => {
  const runtime = await env.startRuntime();
  const setAside: { id: string; reason: string }[] = [];
  runtime.events.on("outbox:set-aside", (event) => setAside.push(event));
  await setMaxMessageSize(2_048);
  const before = await storedJobs();

  const poison = jobRow("poison-row-1", JSON.stringify({ text: "x".repeat(4_000) }));
  const good = Array.from({ length: 20 }, (_, index) => jobRow(`good-row-${index}`, JSON.stringify({ index })));
  await env.database.sql.begin(async (tx) => {
    for (const row of [poison, ...good]) {
      await tx`insert into jetfn.outbox (id, subject, headers, body)
               values (${row.id}, ${row.subject}, ${tx.json(row.headers)}, ${row.body})`;
    }
  });

  // The rows behind it leave at once, while the poison row waits for its next try.
  await eventually(async () => {
    const waiting = await env.database.sql`select id from jetfn.outbox`;
    return waiting.length === 1 && waiting[0]?.id === poison.id;
  }, 15_000);
  expect(await storedJobs()).toBe(before + 20);
  expect(setAside).toEqual([]);

  await eventually(() => setAside.length > 0, 45_000);
  expect(setAside).toEqual([
    expect.objectContaining({ id: poison.id, reason: expect.stringMatching(/refused it 4 times/) }),
  ]);
  // Tried 4 times with back-off (1 s, 2 s, 4 s), not every second or on every commit.
  const tries = runtime.logs.matching("JetStream refused an outbox row").length + 1;
  expect(tries).toBe(4);
  await new Promise((resolve) => setTimeout(resolve, 3_000));
  expect(setAside).toHaveLength(1);
  expect(runtime.logs.matching("Outbox row set aside")).toHaveLength(1);
  expect(runtime.logs.matching("Cannot publish outbox rows")).toEqual([]);
  expect(await env.database.sql`select id from jetfn.outbox`).toEqual([]);
  expect(await storedJobs()).toBe(before + 20);

  // Once the stream takes it, the operator releases it and it is published.
  await setMaxMessageSize(-1);
  const released = await runCli(["outbox", "release", poison.id, "--json"], { DATABASE_URL: env.database.url });
  expect(released.code).toBe(0);
  expect(JSON.parse(released.stdout)).toEqual({ released: [poison.id], refused: [] });
  await eventually(async () => (await storedJobs()) === before + 21, 15_000);
  expect(await env.database.sql`select id from jetfn.outbox_set_aside`).toEqual([]);
});

it("backs off while nothing can be published, instead of retrying every second and on every commit", {
  timeout: 90_000,
}, async () => {
  // No stream stores fn.job.> for a while: every publish fails for a passing reason.
  await manager.streams.delete(STREAM).catch(() => undefined);
  const logs = captureLogs();
  const events = createEmitter();
  const publisher = new StreamPublisher(nc);
  let tries = 0;
  const relay = await startOutboxRelay({
    sql: env.database.sql,
    js: {
      publish(subject, data, options) {
        if (options.msgID === "nobody-serves-this:waiting-row-0") tries++;
        return publisher.publish(subject, data, options);
      },
    },
    events,
    logger: logs.logger,
  });
  onTestFinished(async () => {
    await relay.close();
    publisher.close();
  });
  const setAside: string[] = [];
  events.on("outbox:set-aside", (event) => setAside.push(event.id));
  const insert = (id: string) =>
    env.database.sql`insert into jetfn.outbox (id, subject, headers, body)
                     values (${`nobody-serves-this:${id}`}, 'fn.job.nobody-serves-this', ${env.database.sql.json({ "Jetfn-Id": id })}, '{}')`;
  const started = Date.now();
  await insert("waiting-row-0");
  // Each commit wakes the relay; while it backs off, commits must not bring the tries back.
  for (let index = 1; index <= 12; index++) {
    await new Promise((resolve) => setTimeout(resolve, 500));
    await insert(`waiting-row-${index}`);
  }
  const triesOfFirst = tries;
  const elapsedMs = Date.now() - started;
  expect(setAside).toEqual([]);
  expect(logs.matching("Cannot publish outbox rows")).toHaveLength(1);
  // Tried at about 0, 2, 6, 14 s (6.5 s here, more on a loaded machine), not every second plus
  // once per commit; one try of slack for a sweep that ran late.
  const backedOff = (elapsedMs: number) => {
    let count = 1;
    for (let at = 2_000, delay = 4_000; at <= elapsedMs; at += delay, delay *= 2) count++;
    return count;
  };
  expect(triesOfFirst).toBeGreaterThanOrEqual(2);
  expect(triesOfFirst).toBeLessThanOrEqual(backedOff(elapsedMs) + 1);
  expect(await env.database.sql`select count(*)::int as count from jetfn.outbox`).toEqual([{ count: 13 }]);

  await manager.streams.add({ name: STREAM, subjects: ["fn.job.>"] });
  await eventually(async () => (await env.database.sql`select 1 from jetfn.outbox`).length === 0, 45_000);
  expect(logs.matching("The outbox is publishing again")).toHaveLength(1);
  expect(await env.database.sql`select id from jetfn.outbox_set_aside`).toEqual([]);
});

it("counts a refusal once when setting the row aside fails, and sets it aside once that works", {
  timeout: 90_000,
}, async () => {
  // JetStream refuses the row (larger than the stream takes); the set-aside fails until the
  // trigger is dropped. A failed set-aside must not count as one more refusal.
  if (!(await manager.streams.info(STREAM).catch(() => undefined))) {
    await manager.streams.add({ name: STREAM, subjects: ["fn.job.>"] });
  }
  await setMaxMessageSize(2_048);
  const { sql } = env.database;
  await sql.unsafe(`
    create function refuse_set_aside_for_test() returns trigger language plpgsql as
      $$ begin raise exception 'set-aside refused by the test'; end $$;
    create trigger refuse_set_aside before insert on jetfn.outbox_set_aside
      for each row execute function refuse_set_aside_for_test()`);
  const dropTrigger = () =>
    sql.unsafe(`drop trigger if exists refuse_set_aside on jetfn.outbox_set_aside;
                drop function if exists refuse_set_aside_for_test()`);
  onTestFinished(async () => {
    await dropTrigger();
    await setMaxMessageSize(-1);
  });
  const logs = captureLogs();
  const events = createEmitter();
  const publisher = new StreamPublisher(nc);
  const poison = jobRow("twice-counted-1", JSON.stringify({ text: "x".repeat(4_000) }));
  let tries = 0;
  const relay = await startOutboxRelay({
    sql,
    js: {
      publish(subject, data, options) {
        if (options.msgID === poison.id) tries++;
        return publisher.publish(subject, data, options);
      },
    },
    events,
    logger: logs.logger,
    publishAttempts: 2,
  });
  onTestFinished(async () => {
    await relay.close();
    publisher.close();
  });
  const setAside: { id: string; reason: string }[] = [];
  events.on("outbox:set-aside", (event) => setAside.push(event));
  await sql`insert into jetfn.outbox (id, subject, headers, body)
            values (${poison.id}, ${poison.subject}, ${sql.json(poison.headers)}, ${poison.body})`;

  await eventually(() => logs.matching("Cannot set aside refused outbox rows").length > 0, 30_000);
  expect(tries).toBe(2);
  expect(setAside).toEqual([]);
  await dropTrigger();
  await eventually(() => setAside.length > 0, 45_000);
  // Refused on its third try, and said so: not "4 times" for a failed set-aside counted as a refusal.
  expect(tries).toBe(3);
  expect(setAside).toEqual([
    expect.objectContaining({ id: poison.id, reason: expect.stringMatching(/refused it 3 times/) }),
  ]);
  expect(await sql`select id from jetfn.outbox where id = ${poison.id}`).toEqual([]);
});
