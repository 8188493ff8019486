import { randomUUID } from "node:crypto";
import { type Consumer, DeliverPolicy, type JsMsg, jetstream, jetstreamManager } from "@nats-io/jetstream";
import { headers, type NatsConnection } from "@nats-io/transport-node";
import { describeInvalidName, isValidFunctionName } from "../deploy/function-name";
import { MAX_PRIORITY, prioritySubject } from "../flow/priority";
import { WOKEN_HEADER } from "../flow/wake-tag";
import { jobIdentity } from "../invocation/job-identity";
import { RESUME_HEADER } from "../invocation/resume-tag";
import { JetfnError } from "../support/errors";
import { ID_HEADER, jobMessageId } from "./subjects";

/** Header linking a replayed job to the stored job it re-runs. */
export const REPLAY_OF_HEADER = "Jetfn-Replay-Of";

/** What to replay, from where, to where. */
export interface ReplayOptions {
  /** Where the history is read. */
  source: NatsConnection;
  /** Where the new jobs are published (may be the same connection). */
  target: NatsConnection;
  stream: string;
  fn: string;
  /** Jobs stored at or after this time (epoch milliseconds). */
  sinceMs: number;
  /** Jobs stored at or before this time. @default now */
  untilMs?: number;
}

/** One stored job published again. */
export interface ReplayedJob {
  id: string;
  replayOf: string;
  seq: number;
  /** The original's priority (0-3), which the replay keeps. */
  priority: number;
}

/** How long one fetch of history waits when nothing more is stored. */
const FETCH_EXPIRES_MS = 1_000;
const FETCH_BATCH = 256;

/**
 * Re-publishes a function's stored jobs from the stream's history as new jobs (new ids, the same
 * input, `Jetfn-Replay-Of` = the original's id), leaving the originals untouched. Jobs of every
 * priority are replayed, each to its own level's subject (`fn.job.<name>.P<n>`), so they keep their
 * priority. Reads with an ordered consumer per level from `sinceMs`, and stops at the stream's end
 * as of the start, so jobs replayed into the same stream are never replayed again.
 */
export async function replayJobs(options: ReplayOptions): Promise<ReplayedJob[]> {
  if (!isValidFunctionName(options.fn)) throw new JetfnError("E_INPUT_INVALID", describeInvalidName(options.fn));
  const manager = await jetstreamManager(options.source);
  const stream = await manager.streams.info(options.stream).catch((error: unknown) => {
    throw new JetfnError("E_NOT_FOUND", `no stream ${options.stream} at the source: ${(error as Error).message}`, {
      cause: error,
    });
  });
  const window = { lastSeq: stream.state.last_seq, untilMs: options.untilMs ?? Date.now() };
  const target = jetstream(options.target);
  const replayed: ReplayedJob[] = [];
  for (let priority = 0; priority <= MAX_PRIORITY; priority++) {
    const subject = prioritySubject(options.fn, priority);
    // A level with nothing stored since `sinceMs` is skipped rather than waited on.
    const last = await manager.streams.getMessage(options.stream, { last_by_subj: subject }).catch(() => null);
    if (!last || last.time.getTime() < options.sinceMs) continue;
    const consumer = await jetstream(options.source).consumers.get(options.stream, {
      // A single subject (not an array) keeps this working on servers before 2.10.
      filter_subjects: subject,
      deliver_policy: DeliverPolicy.StartTime,
      opt_start_time: new Date(options.sinceMs).toISOString(),
    });
    for await (const message of readWindow(consumer, window)) {
      // A job woken after waiting for a limit is stored again, and a sleeping job's resumption
      // continues its invocation (its body is empty): replaying the job's first copy is enough.
      if (message.headers?.has(WOKEN_HEADER) || message.headers?.has(RESUME_HEADER)) continue;
      replayed.push(await publishReplay(target, options.fn, priority, message));
    }
  }
  return replayed.sort((a, b) => a.seq - b.seq);
}

/** The messages an ordered consumer delivers up to the window's end (the stream's end as of the start). */
async function* readWindow(consumer: Consumer, window: { lastSeq: number; untilMs: number }): AsyncGenerator<JsMsg> {
  for (;;) {
    const batch = await consumer.fetch({ max_messages: FETCH_BATCH, expires: FETCH_EXPIRES_MS });
    let received = 0;
    let done = false;
    for await (const message of batch) {
      received++;
      if (message.seq > window.lastSeq || message.time.getTime() > window.untilMs) {
        done = true;
        break;
      }
      yield message;
      if (message.info.pending === 0) {
        done = true;
        break;
      }
    }
    if (done) batch.stop();
    if (done || received === 0) return;
  }
}

async function publishReplay(
  target: ReturnType<typeof jetstream>,
  fn: string,
  priority: number,
  message: JsMsg,
): Promise<ReplayedJob> {
  const id = randomUUID();
  const original = jobIdentity(message).id;
  const subject = prioritySubject(fn, priority);
  const header = headers();
  header.set(ID_HEADER, id);
  header.set(REPLAY_OF_HEADER, original);
  try {
    await target.publish(subject, message.data, { msgID: jobMessageId(fn, id), headers: header });
  } catch (error) {
    throw new JetfnError(
      "E_UNAVAILABLE",
      `could not publish the replay of job ${original} to ${subject} (is a jetfn runtime's stream there?): ${(error as Error).message}`,
      { cause: error },
    );
  }
  return { id, replayOf: original, seq: message.seq, priority };
}
