import { randomUUID } from "node:crypto";
import { type JetStreamManager, jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection, headers as natsHeaders } from "@nats-io/transport-node";
import { expect, it } from "vitest";
import { ensureDelayedJobs, farStreamName, startDelayedJobMover } from "../../runtime/nats/delayed-jobs";
import { type JetStreamPublisher, StreamPublisher } from "../../runtime/nats/stream-publisher";
import { eventually } from "../helpers/environment";
import { captureLogs } from "../helpers/logs";
import { startNatsServer } from "../helpers/nats-server";

/** A mover on a NATS server of the test's own, and what the test looks at. */
interface Moving {
  nc: NatsConnection;
  manager: JetStreamManager;
  /** The delayed jobs stream it reads. */
  stream: string;
  /** Stops the mover and closes the connection (the server stops with the test). */
  stop(): Promise<void>;
}

/**
 * Starts a NATS server and a delayed job mover on it (near is 2 s) whose publishes go through
 * `publisher`, made around the real one: JetStream as a slow server answers.
 */
async function startMover(publisher: (real: StreamPublisher) => JetStreamPublisher): Promise<Moving> {
  const server = await startNatsServer();
  const nc = await connect({ servers: server.url });
  const manager = await jetstreamManager(nc);
  const stream = await ensureDelayedJobs(manager, "JETFN_JOBS");
  const mover = startDelayedJobMover({
    js: jetstream(nc),
    publisher: publisher(new StreamPublisher(nc)),
    stream,
    logger: captureLogs().logger,
    nearMs: 2_000,
  });
  return {
    nc,
    manager,
    stream,
    async stop() {
      await mover.stop();
      await nc.close();
    },
  };
}

/** Stores `count` jobs of `send-mail` due in an hour (in the far stream once moved), 500 at a time. */
async function storeDelayedJobs(nc: NatsConnection, count: number): Promise<void> {
  const js = jetstream(nc);
  for (let start = 0; start < count; start += 500) {
    await Promise.all(
      Array.from({ length: Math.min(500, count - start) }, () => {
        const id = `job-${randomUUID()}`;
        const header = natsHeaders();
        header.set("Jetfn-Id", id);
        header.set("Jetfn-Function", "send-mail");
        header.set("Jetfn-Not-Before", String(Date.now() + 3_600_000));
        return js.publish(`jetfn.delayed.${id}`, "{}", { headers: header, msgID: `send-mail:${id}` });
      }),
    );
  }
}

// While JetStream is slow to store what the mover publishes, the mover stops reading: it holds a
// bounded number of delayed messages, however many wait, and reads on once the acks come. (It kept
// reading before, so every job delivered meanwhile stayed in its memory until its ack came.) The
// watch is a fixed window: what it checks is that nothing more happens.
const JOBS = 2_000;

it("reads no further while its publishes wait for their acks, and moves every job once they come", {
  timeout: 60_000,
}, async () => {
  // The far relays' publishes are stored only once released.
  let release!: () => void;
  const released = new Promise<void>((resolve) => {
    release = resolve;
  });
  let waiting = 0;
  const { nc, manager, stream, stop } = await startMover((real) => ({
    async publish(...args) {
      waiting++;
      await released;
      return real.publish(...args);
    },
  }));
  try {
    await storeDelayedJobs(nc, JOBS);
    // Watched for two pull requests' time (5 s each) once its publishes wait: the mover holds at
    // most a batch and its publishes; it asks for nothing more until acks come.
    await eventually(() => waiting > 0, 10_000);
    let held = 0;
    let undelivered = JOBS;
    for (const until = Date.now() + 10_000; Date.now() < until && held < JOBS / 2; ) {
      const info = await manager.consumers.info(stream, "jetfn-delayed");
      held = Math.max(held, info.num_ack_pending);
      undelivered = info.num_pending;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect(held).toBeLessThan(JOBS / 2);
    expect(undelivered).toBe(JOBS - held);
    release();
    await eventually(async () => (await manager.streams.info(farStreamName(stream))).state.messages === JOBS, 30_000);
  } finally {
    release();
    await stop();
  }
});

// Publishes that take longer than the consumers' ack wait (2 s): the messages the mover holds, those
// waiting their turn in its batch and those whose publish waits for its ack, are kept alive, so the
// server delivers none again before it is moved (each delivery again would be published again).
const SLOW_JOBS = 600;
const SLOW_ACK_MS = 3_000;

it("keeps what it holds alive while publishes take longer than the ack wait: no job is delivered again", {
  timeout: 90_000,
}, async () => {
  // Publishes per source message: its relay's message id names the delayed message's sequence.
  const publishes = new Map<string, number>();
  const { nc, manager, stream, stop } = await startMover((real) => ({
    async publish(...args) {
      const id = args[2].msgID;
      publishes.set(id, (publishes.get(id) ?? 0) + 1);
      await new Promise((resolve) => setTimeout(resolve, SLOW_ACK_MS));
      return real.publish(...args);
    },
  }));
  try {
    await storeDelayedJobs(nc, SLOW_JOBS);
    const started = Date.now();
    await eventually(
      async () => (await manager.streams.info(farStreamName(stream))).state.messages === SLOW_JOBS,
      60_000,
    );
    const again = [...publishes.values()].filter((count) => count > 1).length;
    console.info(
      `slow publishes: ${SLOW_JOBS} jobs moved in ${Date.now() - started} ms, ${again} published more than once (delivered again)`,
    );
    expect(publishes.size).toBe(SLOW_JOBS);
    expect(again).toBe(0);
  } finally {
    await stop();
  }
});
