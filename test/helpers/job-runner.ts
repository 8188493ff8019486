import { randomUUID } from "node:crypto";
import {
  AckPolicy,
  type Consumer,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
  jetstream,
  jetstreamManager,
} from "@nats-io/jetstream";
import { connect, headers, type NatsConnection } from "@nats-io/transport-node";
import { connectDatabase, type DatabaseClient } from "../../runtime/db/client";
import { type CommitGroups, createCommitGroups } from "../../runtime/db/commit-groups";
import { createSuccessRecorder } from "../../runtime/db/invocation-store";
import type { TransactionStamp } from "../../runtime/db/transaction-parts";
import { type JobRunnerDependencies, runJob } from "../../runtime/invocation/job-runner";
import { createLimiter, type Limiter } from "../../runtime/invocation/limiter";
import { openProgressBoard } from "../../runtime/nats/progress-board";
import { StreamPublisher } from "../../runtime/nats/stream-publisher";
import { ID_HEADER } from "../../runtime/nats/subjects";
import { type OutboxRelay, startOutboxRelay } from "../../runtime/outbox/outbox-relay";
import type { FunctionDefinition, ResolvedFunction } from "../../runtime/sdk/define-function";
import { resolveFunction } from "../../runtime/sdk/define-function";
import { createEmitter } from "../../runtime/triggers/events";
import type { TestDatabase } from "./database";
import { type CapturedLogger, captureLogs } from "./logs";
import type { TestNatsServer } from "./nats-server";

/**
 * Runs runJob() by hand on real JetStream deliveries and a real database, as the job puller does,
 * but with the test deciding which delivery runs when: two deliveries of one message can be made to
 * share a transaction. Commit groups have one lane, so jobs waiting for it share its COMMIT.
 */
export interface JobRunnerBench {
  readonly deps: JobRunnerDependencies;
  readonly logs: CapturedLogger;
  readonly js: JetStreamClient;
  /** Resolves once a job's invocation (id, attempt) asks for a seat on a lane. */
  seated(invocationId: string, attempt: number): Promise<TransactionStamp>;
  /** Publishes a job for `fn` on its own subject; returns its id. */
  publish(fn: ResolvedFunction, input: unknown): Promise<string>;
  /** The next delivery of `fn`'s jobs (a redelivery once the ack wait has passed), or undefined. */
  next(fn: ResolvedFunction, expiresMs?: number): Promise<JsMsg | undefined>;
  /**
   * Runs runJob() on a delivery, keeping its lease alive (in-progress pings) until it ends; with
   * `ping: false` its lease lapses after the ack wait and the message is delivered again.
   */
  run(fn: ResolvedFunction, message: JsMsg, options?: { ping?: boolean }): Promise<void>;
  /**
   * Acts as the puller until `fn`'s consumer has nothing left: runs every further delivery (a nak's
   * retry, a redelivery). Returns the attempts it ran.
   */
  drain(fn: ResolvedFunction, timeoutMs?: number): Promise<number[]>;
  close(): Promise<void>;
}

/** Ack wait of the bench's consumers: a delivery not pinged for this long is delivered again. */
export const BENCH_ACK_WAIT_MS = 2_000;
const STREAM = "BENCH_JOBS";

/** A function of the bench, resolved as the deployer would. */
export function benchFunction(name: string, definition: FunctionDefinition): ResolvedFunction {
  return resolveFunction(name, `${name}.ts`, 1, definition);
}

export async function startJobRunnerBench(
  nats: TestNatsServer,
  database: TestDatabase,
  functions: ResolvedFunction[],
): Promise<JobRunnerBench> {
  const logs = captureLogs();
  const nc: NatsConnection = await connect({ servers: nats.url });
  const manager: JetStreamManager = await jetstreamManager(nc);
  await manager.streams.add({ name: STREAM, subjects: ["bench.job.>"] });
  for (const fn of functions) {
    await manager.consumers.add(STREAM, {
      durable_name: fn.name,
      filter_subject: `bench.job.${fn.name}`,
      ack_policy: AckPolicy.Explicit,
      ack_wait: BENCH_ACK_WAIT_MS * 1_000_000,
      max_deliver: fn.retry.attempts + 1,
    });
  }
  const js = jetstream(nc);
  const client: DatabaseClient = connectDatabase({ url: database.url, poolSize: 10 });
  const events = createEmitter();
  const publisher = new StreamPublisher(nc);
  const outbox: OutboxRelay = await startOutboxRelay({ sql: client.sql, js: publisher, events, logger: logs.logger });
  const groups = createCommitGroups(client.sql, { lanes: 1, maxSharedHoldMs: 60_000 });
  const seats: TransactionStamp[] = [];
  const seatWaiters: (() => void)[] = [];
  const watched: CommitGroups = {
    takes: (name) => groups.takes(name),
    held: (name, ms) => groups.held(name, ms),
    seat: (stamp) => {
      seats.push(stamp);
      for (const wake of seatWaiters.splice(0)) wake();
      return groups.seat(stamp);
    },
    close: () => groups.close(),
  };
  const shutdown = new AbortController();
  const deps: JobRunnerDependencies = {
    database: client,
    successes: createSuccessRecorder(client.sql),
    commitGroups: watched,
    nc,
    js,
    progress: await openProgressBoard(nc, logs.logger),
    events,
    logger: logs.logger,
    shutdownSignal: shutdown.signal,
    outbox,
    outage: { waiting: 0 },
  };
  const limiters = new Map<string, Limiter>(functions.map((fn) => [fn.name, createLimiter(fn.concurrency)]));
  const consumers = new Map<string, Consumer>();
  const consumer = async (fn: ResolvedFunction): Promise<Consumer> => {
    let found = consumers.get(fn.name);
    if (!found) {
      found = await js.consumers.get(STREAM, fn.name);
      consumers.set(fn.name, found);
    }
    return found;
  };
  const running = new Set<Promise<void>>();

  const bench: JobRunnerBench = {
    deps,
    logs,
    js,
    async seated(invocationId, attempt) {
      for (;;) {
        const stamp = seats.find((seat) => seat.invocationId === invocationId && seat.attempt === attempt);
        if (stamp) return stamp;
        await new Promise<void>((resolve) => seatWaiters.push(resolve));
      }
    },
    async publish(fn, input) {
      const id = randomUUID();
      const h = headers();
      h.set(ID_HEADER, id);
      await js.publish(`bench.job.${fn.name}`, JSON.stringify(input), { headers: h });
      return id;
    },
    async next(fn, expiresMs = 10_000) {
      return (await (await consumer(fn)).next({ expires: expiresMs })) ?? undefined;
    },
    run(fn, message, options = {}) {
      // The puller pings held jobs a few times per ack wait.
      const ping = options.ping === false ? undefined : setInterval(() => message.working(), BENCH_ACK_WAIT_MS / 4);
      const limiter = limiters.get(fn.name) as Limiter;
      const done = runJob(deps, fn, limiter, message).finally(() => {
        clearInterval(ping);
        running.delete(done);
      });
      running.add(done);
      return done;
    },
    async drain(fn, timeoutMs = 30_000) {
      const attempts: number[] = [];
      const deadline = Date.now() + timeoutMs;
      while (Date.now() < deadline) {
        const message = await bench.next(fn, 1_500);
        if (message) {
          attempts.push(message.info.deliveryCount);
          await bench.run(fn, message);
          continue;
        }
        const info = await manager.consumers.info(STREAM, fn.name);
        // Nothing stored and nothing awaiting an ack (a nak's retry is still awaited): done.
        if (info.num_pending === 0 && info.num_ack_pending === 0) return attempts;
      }
      throw new Error(`the consumer of ${fn.name} still had work after ${timeoutMs}ms`);
    },
    async close() {
      shutdown.abort();
      await Promise.allSettled(running);
      await groups.close().catch(() => undefined);
      await outbox.close().catch(() => undefined);
      publisher.close();
      await nc.close().catch(() => undefined);
      await client.close().catch(() => undefined);
    },
  };
  return bench;
}
