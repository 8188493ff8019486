import { createHash } from "node:crypto";
import type { JetStreamManager, MsgRequest, StoredMsg } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import type { Logger } from "pino";
import type { Sql } from "postgres";
import { type JobRecord, recordFailure, type StoredError } from "../db/invocation-store";
import { describeInvalidName, isValidFunctionName } from "../deploy/function-name";
import { parseJobSubject } from "../flow/priority";
import { type ConsumerLookup, lookUpConsumers } from "./consumer-lookup";
import { consumerName, DONE_PREFIX, ID_HEADER, isValidInvocationId, JOB_PREFIX } from "./subjects";

/** Options of the unrouted-jobs watch. */
export interface UnroutedJobsOptions {
  nc: NatsConnection;
  manager: JetStreamManager;
  sql: Sql;
  stream: string;
  /** Functions deployed in this process. */
  deployed: () => readonly string[];
  intervalMs: number;
  logger: Logger;
}

/** Sweeps the jobs stream for jobs no function can ever take. */
export interface UnroutedJobs {
  /** One sweep now (also what the timer runs); resolves with the jobs declared dead. */
  sweep(): Promise<number>;
  close(): Promise<void>;
}

/**
 * Most stored messages one sweep looks at for invalid subjects, so a flood is worked off over
 * several sweeps and a sweep stays short.
 */
const SCAN_LIMIT = 1_000;

/**
 * Starts the watch. `fn.job.<name>` with an invalid name (`fn.job.a..b`, `fn.job.*`, upper case) can
 * never be deployed: each such job is recorded dead with E_FUNCTION_NOT_FOUND and removed from the
 * stream. A valid name that no runtime has deployed is left alone (its jobs wait for it, as after an
 * undeploy) and reported in a warning whenever its count of waiting jobs changes.
 */
export function startUnroutedJobs(options: UnroutedJobsOptions): UnroutedJobs {
  const reportedWaiting = new Map<string, number>();
  const cursors = new Map<string, number>();
  let running: Promise<number> | undefined;
  const sweep = async (): Promise<number> => {
    const info = await options.manager.streams.info(options.stream, { subjects_filter: `${JOB_PREFIX}>` });
    // Wildcard subjects last: walking one may look at every real job it matches, and must not use
    // up the budget of the subjects that hold only their own jobs.
    const subjects = Object.entries(info.state.subjects ?? {}).sort(
      ([left], [right]) => Number(isPattern(left)) - Number(isPattern(right)),
    );
    let budget = SCAN_LIMIT;
    let buried = 0;
    /** Jobs stored for each valid name this process does not deploy, over its subjects. */
    const undeployed = new Map<string, number>();
    for (const [subject, count] of subjects) {
      // A priority subject (fn.job.<name>.P<n>) is its function's too.
      const name = parseJobSubject(subject)?.name ?? subject.slice(JOB_PREFIX.length);
      if (!isValidFunctionName(name)) {
        const from = cursors.get(subject) ?? info.state.first_seq;
        const drained = await drainSubject(options, { subject, name, from, stored: count, budget });
        budget -= drained.examined;
        buried += drained.buried;
        if (drained.next === undefined) cursors.delete(subject);
        else cursors.set(subject, drained.next);
      } else if (!options.deployed().includes(name)) undeployed.set(name, (undeployed.get(name) ?? 0) + count);
    }
    await reportUndeployed(options, reportedWaiting, undeployed, info.state.consumer_count);
    // A subject emptied (by this runtime or another) needs no cursor any more.
    const present = new Set(subjects.map(([subject]) => subject));
    for (const subject of cursors.keys()) if (!present.has(subject)) cursors.delete(subject);
    return buried;
  };
  const timer = setInterval(() => {
    running ??= sweep()
      .catch((error: unknown) => {
        options.logger.debug({ err: error }, "Could not sweep the jobs stream; trying at the next sweep.");
        return 0;
      })
      .finally(() => {
        running = undefined;
      });
  }, options.intervalMs);
  timer.unref();
  return {
    sweep,
    async close() {
      clearInterval(timer);
      await running;
    },
  };
}

/** Where one invalid subject's drain starts, and how much it may look at. */
interface DrainRequest {
  subject: string;
  name: string;
  /** First stream sequence to look at. */
  from: number;
  /** Messages the stream holds for the subject (for the progress line). */
  stored: number;
  /** Most messages to look at. */
  budget: number;
}

/** What one drain did; `next` is where the next sweep goes on, undefined when it reached the end. */
interface DrainResult {
  examined: number;
  buried: number;
  next: number | undefined;
}

/**
 * Walks the stream forward from `from`, by subject, declaring each job of the subject dead and
 * deleting it. Walking by sequence keeps working where asking for the subject's last message does
 * not: nats-server 2.9 answers "no message found" for `last_by_subj` once the subject's newest
 * message is deleted, although older ones remain.
 */
async function drainSubject(options: UnroutedJobsOptions, request: DrainRequest): Promise<DrainResult> {
  const { subject, name } = request;
  let seq = request.from;
  let examined = 0;
  let buried = 0;
  let next: number | undefined = seq;
  while (examined < request.budget) {
    const message = await nextMessage(options, subject, seq);
    if (!message) {
      next = undefined;
      break;
    }
    examined++;
    seq = message.seq + 1;
    next = seq;
    // A subject holding `*` or `>` is also a pattern to the server: the match may be a real
    // function's job. Only a literal match is this subject's, and only that one is removed.
    if (message.subject !== subject) continue;
    await bury(options, message, name);
    // Another runtime's sweep may have removed it first; either way it is gone.
    await options.manager.streams.deleteMessage(options.stream, message.seq, false).catch(() => false);
    buried++;
  }
  if (buried > 0) {
    const remaining = Math.max(0, request.stored - buried);
    options.logger.error(
      { subject: subject.slice(0, 300), dead: buried, remaining, code: "E_FUNCTION_NOT_FOUND" },
      remaining > 0
        ? "Jobs for an invalid function name are dead; the rest follow at the next sweeps."
        : "Jobs for an invalid function name are dead.",
    );
  }
  return { examined, buried, next };
}

function isPattern(subject: string): boolean {
  return subject.includes("*") || subject.includes(">");
}

/** The first message at or after `seq` whose subject matches `subject`, or null. */
function nextMessage(options: UnroutedJobsOptions, subject: string, seq: number): Promise<StoredMsg | null> {
  // STREAM.MSG.GET takes `next_by_subj` (nats-server 2.9+); nats.js types it for direct gets only.
  const query = { seq, next_by_subj: subject } as unknown as MsgRequest;
  return options.manager.streams.getMessage(options.stream, query);
}

async function bury(options: UnroutedJobsOptions, message: StoredMsg, name: string): Promise<void> {
  const given = message.header?.get(ID_HEADER) || undefined;
  const id = given !== undefined && isValidInvocationId(given) ? given : derivedId(options.stream, message);
  const record: JobRecord = {
    id,
    fn: name.slice(0, 200),
    attempt: 1,
    input: parseInput(message.data),
    enqueuedAt: message.time.toISOString(),
    startedAt: new Date().toISOString(),
    streamSeq: message.seq,
    retryOf: undefined,
  };
  const error: StoredError = {
    attempt: 1,
    code: "E_FUNCTION_NOT_FOUND",
    name: "JetfnError",
    message: `job published to ${message.subject.slice(0, 300)}: ${describeInvalidName(name.slice(0, 200))}; no function can ever take it`,
    at: new Date().toISOString(),
  };
  if (await recordFailure(options.sql, record, "dead", error)) {
    // One error line per sweep and subject (drainSubject) keeps a flood of such jobs from flooding the log.
    options.logger.debug(
      { invocationId: id, subject: message.subject.slice(0, 300), seq: message.seq, code: error.code },
      "A job for an invalid function name is dead.",
    );
    options.nc.publish(`${DONE_PREFIX}${id}`, JSON.stringify({ id, fn: record.fn, status: "dead", error }));
  }
}

/**
 * Warns about the jobs waiting for each function this process does not deploy, when their count
 * changed. The functions' consumers are read together: one listing for many of them (a runtime
 * beside others that deploy the rest), not one request each per sweep.
 */
async function reportUndeployed(
  options: UnroutedJobsOptions,
  reported: Map<string, number>,
  undeployed: ReadonlyMap<string, number>,
  consumerCount: number,
): Promise<void> {
  if (undeployed.size === 0) return;
  let consumers: ConsumerLookup;
  try {
    consumers = await lookUpConsumers(options.manager, options.stream, undeployed.size, consumerCount);
  } catch (error) {
    options.logger.debug(
      { err: error },
      "Could not read the consumers of undeployed functions; trying at the next sweep.",
    );
    return;
  }
  for (const [name, stored] of undeployed) {
    await reportWaiting(options, reported, name, stored, consumers).catch((error: unknown) =>
      options.logger.debug({ err: error, fn: name }, "Could not read the consumer; trying at the next sweep."),
    );
  }
}

async function reportWaiting(
  options: UnroutedJobsOptions,
  reported: Map<string, number>,
  name: string,
  stored: number,
  consumers: ConsumerLookup,
): Promise<void> {
  // Jobs stay in the stream after they ran (for replay); only a consumer knows how many still wait.
  const consumer = await consumers.info(consumerName(name));
  const waiting = consumer ? consumer.num_pending + consumer.num_ack_pending : stored;
  if (waiting === 0 || reported.get(name) === waiting) return;
  reported.set(name, waiting);
  if (consumer && consumer.num_waiting > 0) return; // another runtime has it deployed and is pulling
  options.logger.warn(
    { fn: name, waiting, everDeployed: consumer !== undefined },
    `${waiting} job(s) wait for function ${name}, which this runtime does not deploy; they run once it is deployed.`,
  );
}

function parseInput(data: Uint8Array): unknown {
  try {
    return JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(data));
  } catch {
    return null;
  }
}

/** A plain publish's id: deterministic (stream, sequence, stored time), so runtimes sweeping at once agree. */
function derivedId(stream: string, message: StoredMsg): string {
  const hex = createHash("sha256").update(`${stream}:${message.seq}:${message.timestamp}`).digest("hex");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-8${hex.slice(13, 16)}-${hex.slice(16, 20)}-${hex.slice(20, 32)}`;
}
