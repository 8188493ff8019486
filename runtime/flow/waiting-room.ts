import { randomUUID } from "node:crypto";
import {
  DiscardPolicy,
  type JetStreamManager,
  type JsMsg,
  type MsgRequest,
  RetentionPolicy,
  StorageType,
  type StoredMsg,
} from "@nats-io/jetstream";
import { headers as natsHeaders } from "@nats-io/transport-node";
import { streamInfo } from "../nats/stream-lookup";
import type { JetStreamPublisher } from "../nats/stream-publisher";
import { addStreamIfMissing, type Replication, SINGLE_REPLICA } from "../nats/stream-replicas";
import { ID_HEADER, jobMessageId, MSG_ID_HEADER } from "../nats/subjects";
import { groupFunction } from "./flow-key";
import { PRIORITY_HEADER, parseJobSubject, routePriority } from "./priority";
import { WOKEN_HEADER, wokenHeader } from "./wake-tag";

/**
 * Jobs over a limit wait here, out of their function's consumer, so they neither block jobs of
 * other keys behind them nor spend attempts (a nak would count a delivery). The stream
 * `<jobs stream>_WAITING` keeps them on `jetfn.waiting.<slot group>` (`<kind>.<key token>.<fn>`),
 * in arrival order per key. Waking one publishes it again to `fn.job.<name>` (or the priority
 * subject it was parked from, `fn.job.<name>.P<n>`, kept in `Jetfn-Priority`) and deletes it here;
 * the publish's message id comes from a random id written when it was parked, so two runtimes
 * waking the same job store it once, and no client can guess it and have the wake dropped.
 */
export const WAITING_PREFIX = "jetfn.waiting.";
/**
 * On a woken job: the key of the slot kept for it in `JETFN_FLOW`, so the runtime it reaches can
 * read that slot when its watch has not reported the keeping yet. Only a hint: the slot itself says
 * whom it is kept for.
 */
export const KEPT_SLOT_HEADER = "Jetfn-Kept-Slot";

const FUNCTION_HEADER = "Jetfn-Function";
const ATTEMPTS_HEADER = "Jetfn-Attempts-Before";
const ENQUEUED_HEADER = "Jetfn-Enqueued-At";
const WAKE_ID_HEADER = "Jetfn-Wake-Id";
/** Headers only the waiting stream's copy carries; every other header of the job goes back with it. */
const PARKED_ONLY = new Set([
  FUNCTION_HEADER,
  ATTEMPTS_HEADER,
  ENQUEUED_HEADER,
  WAKE_ID_HEADER,
  MSG_ID_HEADER,
  PRIORITY_HEADER,
]);

/** The waiting stream of a jobs stream: `JETFN_JOBS` -> `JETFN_JOBS_WAITING`. */
export function waitingStreamName(jobStream: string): string {
  return `${jobStream}_WAITING`;
}

/** Creates the waiting stream (kept until each job is woken; no age limit). */
export async function ensureWaitingRoom(
  manager: JetStreamManager,
  jobStream: string,
  replication: Replication = SINGLE_REPLICA,
): Promise<string> {
  const name = waitingStreamName(jobStream);
  await addStreamIfMissing(
    manager,
    {
      name,
      subjects: [`${WAITING_PREFIX}>`],
      description: "jetfn jobs waiting for a concurrency or rate limit, jetfn.waiting.<kind>.<key>.<function>",
      retention: RetentionPolicy.Limits,
      storage: StorageType.File,
      discard: DiscardPolicy.Old,
    },
    replication,
  );
  return name;
}

/** A job about to wait: who it is and what it has spent. */
export interface ParkedJob {
  id: string;
  fn: string;
  /** Attempts spent before this delivery (this one ran nothing). */
  attemptsBefore: number;
  /** When it was first enqueued (epoch ms). */
  enqueuedAt: number;
}

/** A job in the waiting stream, read to be woken. */
export interface WaitingMessage {
  /** Its sequence in the waiting stream: the next look starts after it. */
  readonly seq: number;
  readonly id: string;
  readonly fn: string;
  readonly stored: StoredMsg;
}

/** Parks and wakes waiting jobs. */
export interface WaitingRoom {
  readonly stream: string;
  /** Stores the job under its group; the caller acks the original once this resolves. */
  park(message: JsMsg, group: string, job: ParkedJob): Promise<void>;
  /** The oldest job of the group at or after waiting-stream sequence `from`, if any. */
  next(group: string, from?: number): Promise<WaitingMessage | undefined>;
  /**
   * Sends a waiting job back to its function (naming the slot kept for it, if one is) and removes
   * it here. False when another runtime's wake of it was stored first (this publish was a duplicate).
   */
  send(job: WaitingMessage, keptSlot?: string): Promise<boolean>;
  /** Sends up to `count` of the group's oldest waiting jobs back to their function; how many went. */
  wake(group: string, count: number): Promise<number>;
  /** Jobs waiting per group, of every function. */
  waiting(): Promise<Map<string, number>>;
}

/** A waiting room on `stream`, publishing woken jobs with `publisher`, tagging them with `secret`. */
export function createWaitingRoom(
  manager: JetStreamManager,
  publisher: JetStreamPublisher,
  stream: string,
  secret: string,
): WaitingRoom {
  const room: WaitingRoom = {
    stream,
    async park(message, group, job) {
      const header = natsHeaders();
      for (const key of message.headers?.keys() ?? []) {
        if (PARKED_ONLY.has(key) || key === WOKEN_HEADER || key === KEPT_SLOT_HEADER) continue;
        for (const value of message.headers?.values(key) ?? []) header.append(key, value);
      }
      header.set(ID_HEADER, job.id);
      header.set(FUNCTION_HEADER, job.fn);
      header.set(ATTEMPTS_HEADER, String(job.attemptsBefore));
      header.set(ENQUEUED_HEADER, String(job.enqueuedAt));
      header.set(WAKE_ID_HEADER, randomUUID());
      // Its priority is the subject it came on (a job carries no priority header on fn.job.*).
      const priority = parseJobSubject(message.subject)?.priority ?? 0;
      if (priority > 0) header.set(PRIORITY_HEADER, String(priority));
      // A redelivery of the same message parked again within the duplicate window is stored once.
      const msgID = `${jobMessageId(job.fn, job.id)}:p${message.info.stream}.${message.seq}`;
      await publisher.publish(WAITING_PREFIX + group, message.data, { msgID, headers: header });
    },
    async next(group, from = 1) {
      const stored = await manager.streams
        // The server takes next_by_subj in a stream message request (since 2.9); nats.js types only direct gets with it.
        .getMessage(stream, { next_by_subj: WAITING_PREFIX + group, seq: from } as unknown as MsgRequest)
        .catch(() => null);
      if (!stored) return undefined;
      return {
        seq: stored.seq,
        id: stored.header?.get(ID_HEADER) ?? "",
        fn: stored.header?.get(FUNCTION_HEADER) ?? "",
        stored,
      };
    },
    async send(job, keptSlot) {
      const { stored, fn, id } = job;
      const header = natsHeaders();
      for (const key of stored.header?.keys() ?? []) {
        if (PARKED_ONLY.has(key)) continue;
        for (const value of stored.header?.values(key) ?? []) header.append(key, value);
      }
      const kept = {
        attemptsBefore: Number(stored.header?.get(ATTEMPTS_HEADER) ?? 0) || 0,
        enqueuedAt: Number(stored.header?.get(ENQUEUED_HEADER) ?? 0) || stored.time.getTime(),
      };
      header.set(WOKEN_HEADER, wokenHeader(secret, fn, id, kept));
      if (keptSlot !== undefined) header.set(KEPT_SLOT_HEADER, keptSlot);
      const msgID = `${jobMessageId(fn, id)}:w${stored.header?.get(WAKE_ID_HEADER) ?? stored.seq}`;
      const subject = routePriority(fn, stored.header?.get(PRIORITY_HEADER) || undefined);
      const ack = await publisher.publish(subject, stored.data, { msgID, headers: header });
      // Another runtime may have woken and deleted it meanwhile: its publish was the same message.
      await manager.streams.deleteMessage(stream, job.seq, false).catch(() => false);
      return !ack.duplicate;
    },
    async wake(group, count) {
      let woken = 0;
      let cursor = 1;
      while (woken < count) {
        const job = await room.next(group, cursor);
        if (!job) break;
        cursor = job.seq + 1;
        await room.send(job);
        woken++;
      }
      return woken;
    },
    async waiting() {
      const info = await manager.streams.info(stream, { subjects_filter: `${WAITING_PREFIX}>` });
      const counts = new Map<string, number>();
      for (const [subject, count] of Object.entries(info.state.subjects ?? {})) {
        counts.set(subject.slice(WAITING_PREFIX.length), count);
      }
      return counts;
    },
  };
  return room;
}

/** Jobs waiting per function, across every key and limit (for `jetfn ls`); an absent stream is empty. */
export async function readWaitingJobs(manager: JetStreamManager, jobStream: string): Promise<Map<string, number>> {
  const counts = new Map<string, number>();
  const info = await streamInfo(manager, waitingStreamName(jobStream), { subjects_filter: `${WAITING_PREFIX}>` });
  for (const [subject, count] of Object.entries(info?.state.subjects ?? {})) {
    const fn = groupFunction(subject.slice(WAITING_PREFIX.length));
    counts.set(fn, (counts.get(fn) ?? 0) + count);
  }
  return counts;
}
