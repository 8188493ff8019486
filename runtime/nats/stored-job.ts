import { DeliverPolicy, type JsMsg, jetstream, jetstreamManager } from "@nats-io/jetstream";
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
  /** Its sequence in the jobs stream. */
  seq: number;
}

/**
 * Subjects without a consumer read each on its own; past this many (many names no runtime deploys),
 * they are read with the others, from the stream's first message.
 */
const MAX_OWN_SCANS = 16;

/**
 * Whether the jobs stream holds a job with this id that no runtime has recorded yet: the job when
 * found, `false` when every such job was read, `undefined` when there were too many to read.
 *
 * A job is recorded before its message is acknowledged, so only messages past a function
 * consumer's acknowledged floor can be unrecorded: those are read in one pass from the lowest such
 * floor. A subject without a consumer (a function no runtime deploys) holds only unrecorded jobs,
 * and is read from its own first message, so that one old job published to an undeployed name does
 * not make every look-up read the whole stream. Messages are read headers only.
 *
 * Any message may carry any `Jetfn-Id`: of several under the id, one of `fn` (the function the
 * caller knows the id by, when it does) is preferred, then the first stored (ids are first come,
 * first served).
 */
export async function findUnrecordedJob(
  nc: NatsConnection,
  stream: string,
  id: string,
  fn?: string,
): Promise<UnrecordedJob | false | undefined> {
  const manager = await jetstreamManager(nc);
  const info = await manager.streams.info(stream, { subjects_filter: `${JOB_PREFIX}>` });
  const plan = await scanPlan(manager, stream, Object.keys(info.state.subjects ?? {}), info.state.first_seq);
  const search = new IdSearch(id, fn);
  // Each to its first match (all before the other pass's), so the first stored of them is known.
  for (const subject of plan.own) {
    if (search.exhausted) break;
    await scan(nc, stream, search, { filter: subject, below: plan.from });
  }
  if (plan.from !== undefined && plan.from <= info.state.last_seq && !search.found && !search.exhausted) {
    await scan(nc, stream, search, { filter: `${JOB_PREFIX}>`, start: plan.from, last: info.state.last_seq });
  }
  return search.result();
}

/** Where unrecorded jobs may be: subjects read on their own, and the sequence the others are read from. */
interface ScanPlan {
  own: string[];
  from: number | undefined;
}

async function scanPlan(
  manager: Awaited<ReturnType<typeof jetstreamManager>>,
  stream: string,
  subjects: string[],
  firstSeq: number,
): Promise<ScanPlan> {
  const consumed = new Map<string, { floor: number; pending: number }>();
  for await (const consumer of manager.consumers.list(stream)) {
    const subject = consumer.config.filter_subject;
    if (!consumer.config.durable_name || !subject?.startsWith(JOB_PREFIX)) continue;
    const seen = consumed.get(subject);
    consumed.set(subject, {
      floor: Math.min(seen?.floor ?? Number.POSITIVE_INFINITY, consumer.ack_floor.stream_seq + 1),
      pending: (seen?.pending ?? 0) + consumer.num_pending + consumer.num_ack_pending,
    });
  }
  let from: number | undefined;
  const own: string[] = [];
  for (const subject of subjects) {
    const consumer = consumed.get(subject);
    if (!consumer) own.push(subject);
    // Nothing delivered and unacknowledged, nothing undelivered: every job of it was recorded.
    else if (consumer.pending > 0) from = Math.min(from ?? consumer.floor, consumer.floor);
  }
  if (own.length <= MAX_OWN_SCANS) return { own, from };
  return { own: [], from: firstSeq };
}

/** The messages read so far for one id, and the best match among them. */
class IdSearch {
  read = 0;
  /** A match of the preferred function (any match when none is preferred): the search is over. */
  found: UnrecordedJob | undefined;
  /** The first stored match of another function. */
  other: UnrecordedJob | undefined;

  constructor(
    readonly id: string,
    readonly fn: string | undefined,
  ) {}

  get exhausted(): boolean {
    return this.read >= SCAN_LIMIT;
  }

  /** Looks at one message; true when it decides the search. */
  take(message: JsMsg): boolean {
    this.read++;
    if (message.headers?.get(ID_HEADER) !== this.id) return false;
    const job: UnrecordedJob = {
      fn: parseJobSubject(message.subject)?.name,
      enqueuedAt: new Date(Math.floor(message.info.timestampNanos / 1e6)).toISOString(),
      labels: flowLabelsOf(message.subject, message.headers),
      seq: message.seq,
    };
    if (this.fn === undefined || job.fn === this.fn) {
      this.found = earlier(this.found, job);
      return true;
    }
    this.other = earlier(this.other, job);
    return false;
  }

  result(): UnrecordedJob | false | undefined {
    return this.found ?? this.other ?? (this.exhausted ? undefined : false);
  }
}

function earlier(a: UnrecordedJob | undefined, b: UnrecordedJob): UnrecordedJob {
  return a === undefined || b.seq < a.seq ? b : a;
}

/**
 * Reads the messages of `filter`, from `start` (else its first), until one decides the search, the
 * last one (`last`, or the first at or past `below`: another pass reads those) or the search's limit.
 */
async function scan(
  nc: NatsConnection,
  stream: string,
  search: IdSearch,
  range: { filter: string; start?: number; last?: number; below?: number },
): Promise<void> {
  const consumer = await jetstream(nc).consumers.get(stream, {
    filter_subjects: range.filter,
    ...(range.start === undefined
      ? { deliver_policy: DeliverPolicy.All }
      : { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: range.start }),
    headers_only: true,
    inactive_threshold: CONSUMER_INACTIVE_MS,
  });
  try {
    while (!search.exhausted) {
      const batch = await consumer.fetch({ max_messages: FETCH_BATCH, expires: FETCH_EXPIRES_MS });
      let received = 0;
      for await (const message of batch) {
        received++;
        const ends =
          (range.below !== undefined && message.seq >= range.below) ||
          search.take(message) ||
          message.seq >= (range.last ?? Number.POSITIVE_INFINITY) ||
          message.info.pending === 0 ||
          search.exhausted;
        if (ends) {
          batch.stop();
          return;
        }
      }
      if (received === 0) return;
    }
  } finally {
    await consumer.delete().catch(() => undefined);
  }
}

/** Look-ups one runtime makes at once: each reads the stream's backlog of unrecorded jobs. */
const MAX_LOOKUPS_IN_FLIGHT = 4;

/** Looks ids up among a stream's unrecorded jobs, a few at once (see findUnrecordedJob). */
export interface UnrecordedJobFinder {
  /**
   * Waits for a turn; undefined when it cannot tell (too many jobs to read, or NATS failed). `fn`:
   * the function the id is known by, if it is (see findUnrecordedJob).
   */
  find(id: string, fn?: string): Promise<UnrecordedJob | false | undefined>;
  /** Only when a turn is free at once, else undefined: for requests any client can make. */
  findIfFree(id: string, fn?: string): Promise<UnrecordedJob | false | undefined>;
}

/** A finder over `stream`, for one runtime. */
export function unrecordedJobFinder(nc: NatsConnection, stream: string): UnrecordedJobFinder {
  const turns = createLimiter(MAX_LOOKUPS_IN_FLIGHT);
  const look = async (id: string, fn: string | undefined, release: () => void) => {
    try {
      return await findUnrecordedJob(nc, stream, id, fn);
    } catch {
      return undefined;
    } finally {
      release();
    }
  };
  return {
    find: async (id, fn) => look(id, fn, await turns.acquire()),
    findIfFree: async (id, fn) => {
      const release = turns.tryAcquire?.();
      return release ? look(id, fn, release) : undefined;
    },
  };
}
