import { DeliverPolicy, jetstream, jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { type FlowLabels, flowLabelsOf } from "../flow/flow-labels";
import { parseJobSubject } from "../flow/priority";
import { createLimiter } from "../invocation/limiter";
import { ID_HEADER, JOB_PREFIX } from "./subjects";

/** Most stream messages one look-up reads before giving up (it then cannot tell). */
const SCAN_LIMIT = 20_000;
const FETCH_BATCH = 1_000;
const FETCH_EXPIRES_MS = 1_000;
/** The look-up's consumer is deleted when it ends; this is the server's backstop if that fails. */
const CONSUMER_INACTIVE_MS = 30_000;

/** A job the stream holds that no runtime has recorded yet. */
export interface UnrecordedJob {
  /** Its function, from its subject (undefined for a subject no function can have). */
  fn: string | undefined;
  /** When it was stored (ISO 8601). */
  enqueuedAt: string;
  /** Its priority and debounce or singleton key, from its message. */
  labels: FlowLabels;
}

/**
 * Whether the jobs stream holds a job with this id that no runtime has recorded yet: the job when
 * found, `false` when every such job was read, `undefined` when there were too many to read.
 *
 * A job is recorded before its message is acknowledged, so only messages past a function
 * consumer's acknowledged floor can be unrecorded; a function no runtime deploys has no consumer
 * and all its stored jobs count. Messages are read headers only.
 */
export async function findUnrecordedJob(
  nc: NatsConnection,
  stream: string,
  id: string,
): Promise<UnrecordedJob | false | undefined> {
  const manager = await jetstreamManager(nc);
  const info = await manager.streams.info(stream, { subjects_filter: `${JOB_PREFIX}>` });
  const lastSeq = info.state.last_seq;
  const startSeq = await firstUnrecordedSeq(
    manager,
    stream,
    Object.keys(info.state.subjects ?? {}),
    info.state.first_seq,
  );
  if (startSeq === undefined || startSeq > lastSeq) return false;
  const consumer = await jetstream(nc).consumers.get(stream, {
    filter_subjects: `${JOB_PREFIX}>`,
    deliver_policy: DeliverPolicy.StartSequence,
    opt_start_seq: startSeq,
    headers_only: true,
    inactive_threshold: CONSUMER_INACTIVE_MS,
  });
  try {
    let read = 0;
    while (read < SCAN_LIMIT) {
      const batch = await consumer.fetch({ max_messages: FETCH_BATCH, expires: FETCH_EXPIRES_MS });
      let received = 0;
      for await (const message of batch) {
        received++;
        read++;
        if (message.headers?.get(ID_HEADER) === id) {
          batch.stop();
          return {
            fn: parseJobSubject(message.subject)?.name,
            enqueuedAt: new Date(Math.floor(message.info.timestampNanos / 1e6)).toISOString(),
            labels: flowLabelsOf(message.subject, message.headers),
          };
        }
        if (message.seq >= lastSeq || message.info.pending === 0) {
          batch.stop();
          return false;
        }
      }
      if (received === 0) return false;
    }
    return undefined;
  } finally {
    await consumer.delete().catch(() => undefined);
  }
}

/** Look-ups one runtime makes at once: each reads the stream's backlog of unrecorded jobs. */
const MAX_LOOKUPS_IN_FLIGHT = 4;

/** Looks ids up among a stream's unrecorded jobs, a few at once (see findUnrecordedJob). */
export interface UnrecordedJobFinder {
  /** Waits for a turn; undefined when it cannot tell (too many jobs to read, or NATS failed). */
  find(id: string): Promise<UnrecordedJob | false | undefined>;
  /** Only when a turn is free at once, else undefined: for requests any client can make. */
  findIfFree(id: string): Promise<UnrecordedJob | false | undefined>;
}

/** A finder over `stream`, for one runtime. */
export function unrecordedJobFinder(nc: NatsConnection, stream: string): UnrecordedJobFinder {
  const turns = createLimiter(MAX_LOOKUPS_IN_FLIGHT);
  const look = async (id: string, release: () => void) => {
    try {
      return await findUnrecordedJob(nc, stream, id);
    } catch {
      return undefined;
    } finally {
      release();
    }
  };
  return {
    find: async (id) => look(id, await turns.acquire()),
    findIfFree: async (id) => {
      const release = turns.tryAcquire?.();
      return release ? look(id, release) : undefined;
    },
  };
}

/** The lowest stream sequence that may hold an unrecorded job; undefined when no job is stored. */
async function firstUnrecordedSeq(
  manager: Awaited<ReturnType<typeof jetstreamManager>>,
  stream: string,
  subjects: string[],
  firstSeq: number,
): Promise<number | undefined> {
  if (subjects.length === 0) return undefined;
  const ackFloors = new Map<string, number>();
  for await (const consumer of manager.consumers.list(stream)) {
    const subject = consumer.config.filter_subject;
    if (consumer.config.durable_name && subject?.startsWith(JOB_PREFIX)) {
      ackFloors.set(subject, consumer.ack_floor.stream_seq + 1);
    }
  }
  return Math.min(...subjects.map((subject) => ackFloors.get(subject) ?? firstSeq));
}
