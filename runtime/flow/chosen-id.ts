import type { JetStreamManager } from "@nats-io/jetstream";
import type { MsgHdrs } from "@nats-io/transport-node";
import { FUNCTION_HEADER } from "../invocation/job-delay";
import { ID_HEADER } from "../nats/subjects";
import { JetfnError } from "../support/errors";
import { type FlowLabels, flowLabelsOf } from "./flow-labels";
import { parseJobSubject } from "./priority";

/**
 * The id a client chooses for a keyed (debounce or singleton) enqueue must not be another job's.
 * Debounce ends jobs by id: a job enqueued under another job's id, once a later job of its key
 * replaces it, would record that other job `superseded` (and, when it waits as a delayed job,
 * remove it), so it never runs; a singleton enqueued under another job's id would make that job
 * the key's holder, into which later enqueues of the key fold. So the enqueue API refuses such an
 * id (E_ID_CONFLICT), unless the job found is this same keyed job (a client repeating its enqueue):
 * that one is already enqueued, and the repeat is answered with it, claiming and storing nothing
 * (past the stream's duplicate window a second copy would be stored, and would take its key from
 * the key's later jobs).
 *
 * The places a job passes through are asked in the order it passes through them (delayed, queued
 * in the jobs stream, waiting for a limit, recorded), so a job that moves on while they are asked
 * is still found in a later one; the record, asked last, also stands for a job already ended. A
 * job stored after the look (the same id, chosen by its own client a moment later) is the stream's
 * duplicate check's to find: see `refuseDuplicate`.
 */

/** A job found under an id: its function and labels, as far as they are known. */
export interface JobUnderId {
  fn: string | undefined;
  labels?: FlowLabels;
  /** Its sequence in the stream that holds it, when it waits in one. */
  seq?: number;
}

/** Where jobs are found by id. */
export interface JobsById {
  /** A delayed job waiting for its time. */
  scheduled(id: string): Promise<JobUnderId | undefined>;
  /**
   * A job the jobs stream holds and no runtime recorded yet (one of `fn`, when the id has messages
   * of several functions); undefined when it could not tell.
   */
  queued(id: string, fn: string): Promise<JobUnderId | false | undefined>;
  /** A job waiting for a concurrency or rate limit. */
  waiting(id: string): Promise<JobUnderId | undefined>;
  /** The id's record. */
  recorded(id: string): Promise<JobUnderId | undefined>;
}

/** A keyed enqueue under a chosen id: its function and key. */
export interface ChosenIdJob {
  id: string;
  fn: string;
  kind: "debounce" | "singleton";
  key: string;
}

/** What the look for a chosen id found, when no other job has it. */
export interface ChosenIdCheck {
  /** False when the jobs stream held too many unrecorded jobs to read them all (the id was checked everywhere else). */
  complete: boolean;
  /** This same keyed job, enqueued already (the first place it was found). */
  same: JobUnderId | undefined;
}

/** Throws E_ID_CONFLICT when the id is another job's; else says whether this job was found. */
export async function checkChosenId(jobs: JobsById, job: ChosenIdJob): Promise<ChosenIdCheck> {
  const scheduled = refuseOther(await jobs.scheduled(job.id), job);
  const queued = await jobs.queued(job.id, job.fn);
  if (queued) refuseOther(queued, job);
  const waiting = refuseOther(await jobs.waiting(job.id), job);
  const recorded = refuseOther(await jobs.recorded(job.id), job);
  return { complete: queued !== undefined, same: scheduled ?? (queued || undefined) ?? waiting ?? recorded };
}

/**
 * For the publish of a job under a chosen id that JetStream answered as a duplicate: throws
 * E_ID_CONFLICT unless the message it holds under that id is this same keyed job. A message gone
 * since (a delayed job moved on) passes: the look before the publish found no other job.
 */
export async function refuseDuplicate(
  manager: JetStreamManager,
  stored: { stream: string; seq: number },
  job: ChosenIdJob,
): Promise<void> {
  const message = await manager.streams.getMessage(stored.stream, { seq: stored.seq }).catch(() => null);
  if (!message) return;
  if (message.header?.get(ID_HEADER) !== job.id) throw takenIdError(job, undefined);
  refuseOther(jobOfMessage(message.subject, message.header), job);
}

/** The function and labels of a job message: its subject names it, or a delayed one's header. */
function jobOfMessage(subject: string, headers: MsgHdrs | undefined): JobUnderId {
  const fn = parseJobSubject(subject)?.name ?? (headers?.get(FUNCTION_HEADER) || undefined);
  return { fn, labels: flowLabelsOf(subject, headers) };
}

/** Throws E_ID_CONFLICT when `found` is another job; else returns it. */
function refuseOther(found: JobUnderId | undefined, job: ChosenIdJob): JobUnderId | undefined {
  if (found && !isSameJob(found, job)) throw takenIdError(job, found);
  return found;
}

/** The same keyed job: same function and key (a repeat of its enqueue, or the outbox relay's). */
function isSameJob(found: JobUnderId, job: ChosenIdJob): boolean {
  const key = job.kind === "debounce" ? found.labels?.debounceKey : found.labels?.singletonKey;
  return found.fn === job.fn && key === job.key;
}

function takenIdError(job: ChosenIdJob, found: JobUnderId | undefined): JetfnError {
  const owner = found?.fn === undefined ? "another job" : `another job of ${found.fn}`;
  return new JetfnError(
    "E_ID_CONFLICT",
    `invocation id ${JSON.stringify(job.id)} already belongs to ${owner}, not enqueued with ${job.kind} key ${JSON.stringify(job.key)}; a keyed enqueue needs an id of its own: choose another, or leave it out`,
  );
}
