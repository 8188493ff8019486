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

/** Lists the stream's consumers once and keeps those that are a function's durable consumer. */
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
  for (const info of prioritised) {
    const subject = parseJobSubject(info.config.filter_subject ?? "");
    const depth = subject && subject.priority > 0 ? depths.get(subject.name) : undefined;
    if (!depth || info.config.durable_name !== priorityConsumerName(subject?.name ?? "", subject?.priority ?? 0)) {
      continue;
    }
    depth.pending += info.num_pending;
    depth.ackPending += info.num_ack_pending;
    depth.priorityPending = (depth.priorityPending ?? 0) + info.num_pending;
  }
  return depths;
}

/** `billing:charge` filtering `fn.job.billing.charge` -> `billing.charge`; other consumers -> undefined. */
function functionOfConsumer(info: ConsumerInfo): string | undefined {
  const durable = info.config.durable_name;
  if (!durable) return undefined;
  const fn = durable.replaceAll(":", ".");
  return info.config.filter_subject === JOB_PREFIX + fn ? fn : undefined;
}
