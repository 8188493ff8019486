import type { JetStreamManager } from "@nats-io/jetstream";
import { type ConsumerLookup, lookUpConsumers } from "../nats/consumer-lookup";
import { JOB_PREFIX } from "../nats/subjects";
import { PRIORITY_LEVELS, priorityConsumerName, prioritySubject } from "./priority";

/** Finds the priority levels with jobs waiting, for every function of a runtime at once. */
export interface PriorityBacklog {
  /**
   * The levels of `fn`, other than those in `pulled`, with jobs waiting in the stream: jobs its
   * consumer has not delivered or has not seen acknowledged, or, for a level with no consumer yet,
   * any job stored on its subject. Rejects when the stream cannot be read.
   */
  waitingLevels(fn: string, pulled: readonly number[]): Promise<number[]>;
}

interface Question {
  fn: string;
  pulled: readonly number[];
  answer: (levels: number[]) => void;
  fail: (error: unknown) => void;
}

/**
 * After a reconnect every deployed function asks at once (flow/priority-pullers.ts). One stream
 * info per function (filtered to `fn.job.<name>.*`) and a consumer info per stored level made 500
 * functions send 500-2,000 requests in one burst. The questions asked before a read starts (all of
 * a reconnect's, asked in one loop) share it instead: one stream info listing the stored job
 * subjects (`fn.job.>`; paged by nats.js past the server's 100,000 subjects a page), and one read
 * of the consumers of the levels that have stored jobs and are not pulled yet (nats/consumer-lookup.ts).
 * Questions asked during a read wait for the next one, which may see jobs stored after it began.
 */
export function createPriorityBacklog(manager: JetStreamManager, stream: string): PriorityBacklog {
  let queued: Question[] = [];
  let reading = false;
  const readQueued = async (): Promise<void> => {
    while (queued.length > 0) {
      const questions = queued;
      queued = [];
      await answerTogether(manager, stream, questions);
    }
    reading = false;
  };
  return {
    waitingLevels(fn, pulled) {
      return new Promise((answer, fail) => {
        queued.push({ fn, pulled, answer, fail });
        if (reading) return;
        reading = true;
        // After the current task: a loop over every function asks all its questions first.
        setImmediate(() => void readQueued());
      });
    },
  };
}

/** Answers `questions` from one read of the stream's subjects and one of the consumers they need. */
async function answerTogether(manager: JetStreamManager, stream: string, questions: Question[]): Promise<void> {
  let read: { candidates: number[][]; consumers: ConsumerLookup };
  try {
    const info = await manager.streams.info(stream, { subjects_filter: subjectsFilter(questions) });
    const stored = info.state.subjects ?? {};
    const candidates = questions.map(({ fn, pulled }) =>
      PRIORITY_LEVELS.filter((level) => !pulled.includes(level) && (stored[prioritySubject(fn, level)] ?? 0) > 0),
    );
    const wanted = candidates.reduce((sum, levels) => sum + levels.length, 0);
    read = { candidates, consumers: await lookUpConsumers(manager, stream, wanted, info.state.consumer_count) };
  } catch (error) {
    for (const question of questions) question.fail(error);
    return;
  }
  for (const [index, question] of questions.entries()) {
    // A consumer the listing left out and that cannot be read fails its own function's question only.
    await waitingOf(question.fn, read.candidates[index] ?? [], read.consumers).then(question.answer, question.fail);
  }
}

/** Of the levels of `fn` with stored jobs, those whose consumer has jobs to deliver, or that have none. */
async function waitingOf(fn: string, stored: number[], consumers: ConsumerLookup): Promise<number[]> {
  const waiting: number[] = [];
  for (const level of stored) {
    const consumer = await consumers.info(priorityConsumerName(fn, level));
    if (!consumer || consumer.num_pending + consumer.num_ack_pending > 0) waiting.push(level);
  }
  return waiting;
}

/** One function's levels (`fn.job.<name>.*`, which also holds functions named `<name>.<x>`), or every job subject. */
function subjectsFilter(questions: Question[]): string {
  const [only] = questions;
  return questions.length === 1 && only ? `${prioritySubject(only.fn, 0)}.*` : `${JOB_PREFIX}>`;
}
