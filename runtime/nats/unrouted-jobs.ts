import { createHash } from "node:crypto";
import type { JetStreamManager, StoredMsg } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import type { Logger } from "pino";
import type { Sql } from "postgres";
import { type JobRecord, recordFailure, type StoredError } from "../db/invocation-store";
import { describeInvalidName, isValidFunctionName } from "../function-name";
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

/** Most jobs one sweep declares dead per subject, so a flood is worked off over several sweeps. */
const SWEEP_LIMIT = 200;

/**
 * Starts the watch. `fn.job.<name>` with an invalid name (`fn.job.a..b`, `fn.job.*`, upper case) can
 * never be deployed: each such job is recorded dead with E_FUNCTION_NOT_FOUND and removed from the
 * stream. A valid name that no runtime has deployed is left alone (its jobs wait for it, as after an
 * undeploy) and reported in a warning whenever its count of waiting jobs changes. A job published to a
 * literal wildcard subject (`fn.job.*`) is removed only while it is the newest message matching it.
 */
export function startUnroutedJobs(options: UnroutedJobsOptions): UnroutedJobs {
  const reportedWaiting = new Map<string, number>();
  let running: Promise<number> | undefined;
  const sweep = async (): Promise<number> => {
    const info = await options.manager.streams.info(options.stream, { subjects_filter: `${JOB_PREFIX}>` });
    let buried = 0;
    for (const [subject, count] of Object.entries(info.state.subjects ?? {})) {
      const name = subject.slice(JOB_PREFIX.length);
      if (!isValidFunctionName(name)) buried += await buryAll(options, subject, name);
      else if (!options.deployed().includes(name)) await reportWaiting(options, reportedWaiting, name, count);
    }
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

async function buryAll(options: UnroutedJobsOptions, subject: string, name: string): Promise<number> {
  let buried = 0;
  while (buried < SWEEP_LIMIT) {
    const message = await options.manager.streams
      .getMessage(options.stream, { last_by_subj: subject })
      .catch(() => null);
    if (!message) break;
    // A subject holding `*` or `>` is also a pattern to the server: the last message matching it may
    // belong to a real function. Only a literal match is safe to remove.
    if (message.subject !== subject) {
      options.logger.warn(
        { subject },
        "Jobs were published to a wildcard subject; they cannot be picked out of the stream safely and stay there.",
      );
      break;
    }
    await bury(options, message, name);
    // Another runtime's sweep may have removed it first; either way it is gone.
    await options.manager.streams.deleteMessage(options.stream, message.seq, false).catch(() => false);
    buried++;
  }
  return buried;
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
    options.logger.error(
      { invocationId: id, subject: message.subject, seq: message.seq, code: error.code },
      "A job for an invalid function name is dead.",
    );
    options.nc.publish(`${DONE_PREFIX}${id}`, JSON.stringify({ id, fn: record.fn, status: "dead", error }));
  }
}

async function reportWaiting(
  options: UnroutedJobsOptions,
  reported: Map<string, number>,
  name: string,
  stored: number,
): Promise<void> {
  // Jobs stay in the stream after they ran (for replay); only a consumer knows how many still wait.
  const consumer = await options.manager.consumers.info(options.stream, consumerName(name)).catch(() => undefined);
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
