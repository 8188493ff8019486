import { hostname } from "node:os";
import { type Msg, type NatsConnection, nuid, type Subscription } from "@nats-io/transport-node";
import type { Logger } from "pino";
import type { ErrorCounts, FunctionStats, InvocationStats } from "../invocation/invocation-stats";
import type { DurationHistogram, DurationSummary } from "../support/duration-histogram";
import { PACKAGE_VERSION } from "../support/package-root";
import type { QueueDepth, QueueDepthReader } from "./queue-depth";
import type { ReplyGuard } from "./reply-guard";
import { callSubject } from "./subjects";

/** Service name under which every runtime registers (`$SRV.INFO.jetfn`). */
export const SERVICE_NAME = "jetfn";
/** Subject prefix of the NATS services protocol. */
export const SERVICE_API_PREFIX = "$SRV";
/**
 * Longest a stats reply waits for the consumer listing before answering without queue depths;
 * below the 300 ms after which `jetfn ls` stops waiting for more replies.
 */
const QUEUE_DEPTH_WAIT_MS = 200;

const VERSION = PACKAGE_VERSION;

/** Fields every services-protocol response carries. */
export interface ServiceIdentity {
  name: string;
  id: string;
  version: string;
  metadata: Record<string, string>;
}

/** `io.nats.micro.v1.ping_response`. */
export interface ServicePing extends ServiceIdentity {
  type: "io.nats.micro.v1.ping_response";
}

/** One endpoint in `io.nats.micro.v1.info_response`. */
export interface EndpointInfo {
  name: string;
  subject: string;
  queue_group: string;
  metadata: Record<string, string>;
}

/** `io.nats.micro.v1.info_response`. */
export interface ServiceInfo extends ServiceIdentity {
  type: "io.nats.micro.v1.info_response";
  description: string;
  endpoints: EndpointInfo[];
}

/** What jetfn adds in each endpoint's `data`: what NATS services stats lack. */
export interface EndpointData {
  function: string;
  calls: number;
  jobs: number;
  succeeded: number;
  errors: ErrorCounts;
  retries: number;
  dead: number;
  in_flight: number;
  duration_ms: DurationSummary;
  duration_histogram: DurationHistogram;
  completed_last_minute: number;
  rate_per_second: number;
  /** Jobs waiting (`pending`) and handed out (`ack_pending`) across all runtimes; null when unknown. */
  queue: { pending: number; ack_pending: number } | null;
  /** The process answering, so tools can sum memory and find each instance's uptime. */
  process: ProcessData;
  /** Limits across runtimes (`concurrency 2 per key`, `rate 10/1s`); absent when it has none. */
  limits?: string[];
}

/** One runtime process, as reported in every endpoint's data. */
export interface ProcessData {
  pid: number;
  hostname: string;
  uptime_ms: number;
  rss_bytes: number;
  calls_served: number;
  /** Outbox rows not yet published and the oldest one's age (the database is shared, so every runtime sees the same). */
  outbox?: { count: number; oldest_age_ms: number };
}

/** One endpoint in `io.nats.micro.v1.stats_response`; times are in nanoseconds. */
export interface EndpointStats {
  name: string;
  subject: string;
  queue_group: string;
  num_requests: number;
  num_errors: number;
  last_error: string;
  processing_time: number;
  average_processing_time: number;
  data: EndpointData;
}

/** `io.nats.micro.v1.stats_response`. */
export interface ServiceStats extends ServiceIdentity {
  type: "io.nats.micro.v1.stats_response";
  started: string;
  endpoints: EndpointStats[];
}

/** What the discovery responder reads from the runtime. */
export interface ServiceDiscoveryOptions {
  nc: NatsConnection;
  queueGroup: string;
  /** Names of the functions deployed right now. */
  functions: () => readonly string[];
  stats: InvocationStats;
  queueDepth: QueueDepthReader;
  /** How far the outbox relay lags, when this runtime runs one. */
  outboxLag?: () => Promise<{ count: number; oldestAgeMs: number }>;
  /** A deployed function's limits across runtimes, described (none: empty). */
  limits?: (fn: string) => string[];
  logger: Logger;
  /** Drops requests whose reply subject is not an inbox. */
  replyGuard: ReplyGuard;
}

/** A runtime's answers to `$SRV.PING`, `$SRV.INFO` and `$SRV.STATS`. */
export interface ServiceDiscovery {
  /** This process's service instance id. */
  readonly id: string;
  close(): void;
}

/**
 * Registers this runtime with the NATS services protocol: one service instance per process, one
 * endpoint per deployed function (`fn.call.<name>`). Every instance answers (no queue group), so
 * `nats micro ls` and `jetfn ls` see all of them. Calls themselves are served by the call server.
 */
export function startServiceDiscovery(options: ServiceDiscoveryOptions): ServiceDiscovery {
  const identity: ServiceIdentity = {
    name: SERVICE_NAME,
    id: nuid.next(),
    version: VERSION,
    metadata: { hostname: hostname(), pid: String(process.pid), node: process.version },
  };
  const started = new Date();
  const answer = {
    PING: (): ServicePing => ({ type: "io.nats.micro.v1.ping_response", ...identity }),
    INFO: (): ServiceInfo => infoResponse(identity, options.functions(), options.queueGroup),
    STATS: async (): Promise<ServiceStats> => {
      const [depths, outbox] = await Promise.all([
        readDepths(options.queueDepth, options.logger),
        options.outboxLag?.().catch(() => undefined),
      ]);
      const stats = options.functions().map((fn) => options.stats.get(fn));
      const response = statsResponse(identity, started, stats, depths, options.queueGroup, options.stats.served);
      for (const endpoint of response.endpoints) {
        const limits = options.limits?.(endpoint.data.function) ?? [];
        if (limits.length > 0) endpoint.data.limits = limits;
      }
      if (outbox) {
        for (const endpoint of response.endpoints) {
          endpoint.data.process.outbox = { count: outbox.count, oldest_age_ms: outbox.oldestAgeMs };
        }
      }
      return response;
    },
  };
  const subscriptions: Subscription[] = [];
  for (const [verb, respond] of Object.entries(answer)) {
    for (const subject of verbSubjects(verb, identity.id)) {
      subscriptions.push(
        options.nc.subscribe(subject, {
          callback: (error, message) => {
            if (error || !message.reply || !options.replyGuard.accepts(message, "discovery")) return;
            void replyWith(message, respond, options.logger);
          },
        }),
      );
    }
  }
  return {
    id: identity.id,
    close() {
      for (const subscription of subscriptions) subscription.unsubscribe();
    },
  };
}

/** `$SRV.STATS`, `$SRV.STATS.jetfn`, `$SRV.STATS.jetfn.<id>`. */
function verbSubjects(verb: string, id: string): string[] {
  const base = `${SERVICE_API_PREFIX}.${verb}`;
  return [base, `${base}.${SERVICE_NAME}`, `${base}.${SERVICE_NAME}.${id}`];
}

async function replyWith(message: Msg, respond: () => unknown, logger: Logger): Promise<void> {
  try {
    message.respond(JSON.stringify(await respond()));
  } catch (error) {
    logger.warn({ err: error, subject: message.subject }, "A services-protocol request could not be answered.");
  }
}

async function readDepths(reader: QueueDepthReader, logger: Logger): Promise<Map<string, QueueDepth>> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<Map<string, QueueDepth>>((resolve) => {
    timer = setTimeout(() => resolve(new Map()), QUEUE_DEPTH_WAIT_MS);
  });
  try {
    return await Promise.race([reader.read(), late]);
  } catch (error) {
    logger.debug({ err: error }, "Could not read queue depths for stats.");
    return new Map();
  } finally {
    clearTimeout(timer);
  }
}

/** Endpoint names may only hold letters, digits, `-` and `_`: `primes.is-prime` -> `primes_is-prime`. */
export function endpointName(fn: string): string {
  return fn.replaceAll(".", "_");
}

function infoResponse(identity: ServiceIdentity, functions: readonly string[], queueGroup: string): ServiceInfo {
  return {
    type: "io.nats.micro.v1.info_response",
    ...identity,
    description: "jetfn runtime: one endpoint per deployed function",
    endpoints: functions.map((fn) => ({
      name: endpointName(fn),
      subject: callSubject(fn),
      queue_group: queueGroup,
      metadata: { function: fn, jobs: `fn.job.${fn}` },
    })),
  };
}

function statsResponse(
  identity: ServiceIdentity,
  started: Date,
  stats: FunctionStats[],
  depths: Map<string, QueueDepth>,
  queueGroup: string,
  served: number,
): ServiceStats {
  const instance = processData(started, served);
  return {
    type: "io.nats.micro.v1.stats_response",
    ...identity,
    started: started.toISOString(),
    endpoints: stats.map((entry) => endpointStats(entry, depths.get(entry.fn), queueGroup, instance)),
  };
}

function endpointStats(
  stats: FunctionStats,
  depth: QueueDepth | undefined,
  queueGroup: string,
  instance: ProcessData,
): EndpointStats {
  const finished = stats.succeeded + stats.errors;
  const processingNanos = Math.round(stats.processingTimeMs * 1_000_000);
  return {
    name: endpointName(stats.fn),
    subject: callSubject(stats.fn),
    queue_group: queueGroup,
    num_requests: stats.requests,
    num_errors: stats.errors,
    last_error: stats.lastError,
    processing_time: processingNanos,
    average_processing_time: finished === 0 ? 0 : Math.round(processingNanos / finished),
    data: {
      function: stats.fn,
      calls: stats.calls,
      jobs: stats.jobs,
      succeeded: stats.succeeded,
      errors: stats.errorsByKind,
      retries: stats.retries,
      dead: stats.dead,
      in_flight: stats.inFlight,
      duration_ms: stats.duration,
      duration_histogram: stats.histogram,
      completed_last_minute: stats.completedLastMinute,
      rate_per_second: stats.ratePerSecond,
      queue: depth ? { pending: depth.pending, ack_pending: depth.ackPending } : null,
      process: instance,
    },
  };
}

function processData(started: Date, served: number): ProcessData {
  return {
    pid: process.pid,
    hostname: hostname(),
    uptime_ms: Date.now() - started.getTime(),
    rss_bytes: process.memoryUsage.rss(),
    calls_served: served,
  };
}
