import type { ConsumerInfo, JetStreamManager } from "@nats-io/jetstream";
import { parseJobSubject, priorityConsumerName } from "../flow/priority";
import { JOB_PREFIX } from "./subjects";

/** Jobs of one function waiting in the stream, from its durable consumer. */
export interface QueueDepth {
  /** Stored jobs not yet delivered (`num_pending`). */
  pending: number;
  /** Delivered jobs not yet acknowledged (`num_ack_pending`): running or waiting for a slot. */
  ackPending: number;
  /** Of `pending`, jobs with a priority (1-3) waiting in the priority consumers. */
  priorityPending?: number;
}

/** Reads every function's queue depth with one consumer listing, cached briefly. */
export interface QueueDepthReader {
  /** Function name -> depth; functions without a consumer are absent. */
  read(): Promise<Map<string, QueueDepth>>;
}

/** How long one listing is reused: scrapes and stats requests arriving together share it. */
export const DEFAULT_QUEUE_DEPTH_MAX_AGE_MS = 1_000;

/** Creates a reader of the jobs stream's function consumers. */
export function createQueueDepthReader(
  manager: JetStreamManager,
  stream: string,
  maxAgeMs = DEFAULT_QUEUE_DEPTH_MAX_AGE_MS,
): QueueDepthReader {
  let cached: { at: number; depths: Promise<Map<string, QueueDepth>> } | undefined;
  return {
    read() {
      if (!cached || Date.now() - cached.at > maxAgeMs) {
        const depths = listQueueDepths(manager, stream);
        cached = { at: Date.now(), depths };
        // A failed listing is not reused: the next reader asks again.
        depths.catch(() => {
          if (cached?.depths === depths) cached = undefined;
        });
      }
      return cached.depths;
    },
  };
}

/**
 * Lists the stream's consumers once and keeps those that are a function's durable consumer. A
 * priority level with no consumer yet (flow/priority-consumers.ts) counts every job stored on its
 * subject, read with one look at the stream's subjects.
 */
export async function listQueueDepths(manager: JetStreamManager, stream: string): Promise<Map<string, QueueDepth>> {
  const depths = new Map<string, QueueDepth>();
  const prioritised: ConsumerInfo[] = [];
  for await (const info of manager.consumers.list(stream)) {
    if ((parseJobSubject(info.config.filter_subject ?? "")?.priority ?? 0) > 0) {
      prioritised.push(info);
      continue;
    }
    const fn = functionOfConsumer(info);
    if (fn) depths.set(fn, { pending: info.num_pending, ackPending: info.num_ack_pending });
  }
  // A function's priority consumers (flow/priority.ts) add to its depth.
  const consumed = new Set<string>();
  for (const info of prioritised) {
    const subject = parseJobSubject(info.config.filter_subject ?? "");
    const depth = subject && subject.priority > 0 ? depths.get(subject.name) : undefined;
    if (!depth || info.config.durable_name !== priorityConsumerName(subject?.name ?? "", subject?.priority ?? 0)) {
      continue;
    }
    consumed.add(info.config.filter_subject ?? "");
    addPriorityDepth(depth, info.num_pending, info.num_ack_pending);
  }
  if (depths.size > 0) await addUnconsumedLevels(manager, stream, depths, consumed);
  return depths;
}

/** Adds the jobs stored on priority subjects that have no consumer yet to their function's depth. */
async function addUnconsumedLevels(
  manager: JetStreamManager,
  stream: string,
  depths: Map<string, QueueDepth>,
  consumed: ReadonlySet<string>,
): Promise<void> {
  const info = await manager.streams.info(stream, { subjects_filter: `${JOB_PREFIX}>` });
  for (const [subject, stored] of Object.entries(info.state.subjects ?? {})) {
    const job = parseJobSubject(subject);
    const depth = job && job.priority > 0 && !consumed.has(subject) ? depths.get(job.name) : undefined;
    if (depth) addPriorityDepth(depth, stored, 0);
  }
}

function addPriorityDepth(depth: QueueDepth, pending: number, ackPending: number): void {
  depth.pending += pending;
  depth.ackPending += ackPending;
  depth.priorityPending = (depth.priorityPending ?? 0) + pending;
}

/** `billing:charge` filtering `fn.job.billing.charge` -> `billing.charge`; other consumers -> undefined. */
function functionOfConsumer(info: ConsumerInfo): string | undefined {
  const durable = info.config.durable_name;
  if (!durable) return undefined;
  const fn = durable.replaceAll(":", ".");
  return info.config.filter_subject === JOB_PREFIX + fn ? fn : undefined;
}
