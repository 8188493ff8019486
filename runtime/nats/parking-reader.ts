import type { Consumer, ConsumerMessages, JetStreamClient, JsMsg } from "@nats-io/jetstream";
import type { Logger } from "pino";
import { createLimiter } from "../invocation/limiter";

/**
 * Messages one pull request brings. The reader asks for the next batch only once it has handled
 * this one, so it holds at most a batch and the publishes below, however many messages wait.
 */
const BATCH = 256;
/**
 * Publishes (moves, relays) the handler may leave waiting for JetStream's stored ack at once; the
 * reader reads on only when one is done. Without a bound, every message delivered while acks
 * lagged stayed in memory (its message, headers, promise and timer) until its ack came.
 */
const MAX_PUBLISHING = 256;
/**
 * How long one pull request lasts. nats.js expects a heartbeat at half of it and gives the request
 * up after two missed, so a request lost to a reconnect is noticed within about this.
 */
const PULL_EXPIRES_MS = 5_000;
/** Wait before a failed read is tried again: short, so due jobs move soon after JetStream is back. */
const RETRY_READ_MS = 250;
/**
 * How often the messages a reader holds are marked in progress: under a third of the consumers' ack
 * wait (2 s, delayed-jobs.ts), as the job puller does, so a message waiting its turn in a batch, or
 * for its publish's ack from a slow JetStream, is not delivered again meanwhile (and moved twice).
 */
const KEEP_ALIVE_MS = 600;

/** A reader's publish slots: a message that took one is kept alive until the slot is given back. */
export interface PublishSlots {
  take(message: JsMsg): Promise<() => void>;
}

/** What reading one of the delayed-jobs consumers needs. */
export interface ParkingReaderOptions {
  js: JetStreamClient;
  stream: string;
  consumer: string;
  logger: Logger;
  /**
   * Handles one message: answers it, or takes a slot of `publishing` for a publish and answers it
   * when that is stored. The reader waits for the returned promise before the next message.
   */
  handle: (message: JsMsg, publishing: PublishSlots) => Promise<void>;
}

/** A running reader. */
export interface ParkingReader {
  /** Stops reading and waits until the publishes in flight are answered. */
  stop(): Promise<void>;
}

/**
 * Reads a durable pull consumer a batch at a time: a fetch, not nats.js's consume, which pulls
 * again as messages arrive however far behind its reader is. A runtime holds one batch and the
 * publishes in flight, whatever the backlog, and marks what it holds in progress until answered.
 */
export function readParkingConsumer(options: ParkingReaderOptions): ParkingReader {
  const limiter = createLimiter(MAX_PUBLISHING);
  // Received and not answered yet: waiting their turn in a batch, or for their publish's ack.
  const inTurn = new Set<JsMsg>();
  const storing = new Set<JsMsg>();
  const publishing: PublishSlots = {
    async take(message) {
      const release = limiter.tryAcquire?.() ?? (await limiter.acquire());
      storing.add(message);
      return () => {
        storing.delete(message);
        release();
      };
    },
  };
  const keepAlive = setInterval(() => {
    for (const message of inTurn) message.working();
    for (const message of storing) message.working();
  }, KEEP_ALIVE_MS);
  keepAlive.unref();
  let batch: ConsumerMessages | undefined;
  let stopping = false;
  const loop = (async () => {
    let consumer: Consumer | undefined;
    let failures = 0;
    const recovered = () => {
      if (failures > 0) options.logger.info({ stream: options.stream, failures }, "Reading delayed jobs again.");
      failures = 0;
    };
    while (!stopping) {
      try {
        // Looked up once: a fetch names the durable consumer, and a lookup while JetStream
        // recovered from a restart waited out its 5 s timeout before the next fetch.
        consumer ??= await options.js.consumers.get(options.stream, options.consumer);
        // bind: after a reconnect nats.js asks again at once, instead of looking the consumer up
        // first and, while JetStream is not back, waiting 0.5-1.5x PULL_EXPIRES_MS between looks.
        batch = await consumer.fetch({ max_messages: BATCH, expires: PULL_EXPIRES_MS, bind: true });
        if (stopping) batch.stop();
        await handleInTurn(batch, inTurn, (message) => {
          recovered();
          return options.handle(message, publishing);
        });
        recovered();
      } catch (error) {
        if (stopping) break;
        // Once per outage: during a nats-server restart every read fails until JetStream is back.
        if (failures++ === 0) {
          options.logger.warn({ err: error, stream: options.stream }, "Reading delayed jobs failed; trying again.");
        }
        await new Promise((resolve) => setTimeout(resolve, RETRY_READ_MS));
      }
    }
    // The last publishes are answered before the connection closes: taking every slot waits for them.
    for (let slot = 0; slot < MAX_PUBLISHING; slot++) await limiter.acquire();
    clearInterval(keepAlive);
  })();
  return {
    async stop() {
      stopping = true;
      batch?.stop();
      await loop;
    },
  };
}

/**
 * Handles a batch's messages one after the other, in order. Each is taken from the batch as soon as
 * it arrives, not when its turn comes, and is in `waiting` (kept alive) until handled; rejects as
 * the batch does.
 */
async function handleInTurn(
  batch: ConsumerMessages,
  waiting: Set<JsMsg>,
  handle: (message: JsMsg) => Promise<void>,
): Promise<void> {
  const queue: JsMsg[] = [];
  let arrived: (() => void) | undefined;
  let ended = false;
  let failure: { error: unknown } | undefined;
  const receiving = (async () => {
    try {
      for await (const message of batch) {
        waiting.add(message);
        queue.push(message);
        arrived?.();
      }
    } catch (error) {
      failure = { error };
    } finally {
      ended = true;
      arrived?.();
    }
  })();
  try {
    for (;;) {
      const message = queue.shift();
      if (message) {
        try {
          await handle(message);
        } finally {
          waiting.delete(message);
        }
      } else if (ended) break;
      else await new Promise<void>((resolve) => (arrived = resolve));
    }
  } finally {
    // A handler that threw: the rest is left to the server, which delivers it again after the ack wait.
    batch.stop();
    await receiving;
    for (const message of queue) waiting.delete(message);
  }
  if (failure) throw failure.error;
}
