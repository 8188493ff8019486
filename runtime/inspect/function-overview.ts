import { jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { readWaitingJobs } from "../flow/waiting-room";
import { type ErrorCounts, emptyErrorCounts } from "../invocation/invocation-stats";
import { listQueueDepths, type QueueDepth } from "../nats/queue-depth";
import { SERVICE_API_PREFIX, SERVICE_NAME, type ServiceStats } from "../nats/service-discovery";
import {
  type DurationSummary,
  emptyHistogram,
  mergeHistogram,
  summarizeDurations,
} from "../support/duration-histogram";
import { readSchedules } from "../triggers/scheduler";

/** One function across every running runtime. */
export interface FunctionOverview {
  function: string;
  /** Runtime processes serving it. */
  instances: number;
  /** Uptime of its longest-running instance; null with no instance. */
  uptimeMs: number | null;
  /** Invocations finished by all instances since they started. */
  served: number;
  calls: number;
  jobs: number;
  inFlight: number;
  /** Resident memory of the processes serving it, summed. */
  memoryBytes: number;
  /** Jobs waiting in the stream (consumer `num_pending`); null when unknown. */
  queued: number | null;
  /** Of `queued`, jobs with a priority (1-3), which start before the others. */
  queuedPriority: number | null;
  /** Jobs handed out and not yet acknowledged; null when unknown. */
  ackPending: number | null;
  /** Finished invocations per second over the last minute, all instances. */
  ratePerSecond: number;
  /** Estimated time to work off the queue at that rate; null when it cannot be estimated. */
  drainMs: number | null;
  duration: DurationSummary;
  errors: ErrorCounts;
  errorCount: number;
  retries: number;
  dead: number;
  /** For a scheduled function, its next due time (ISO 8601). */
  nextDueAt: string | null;
  /** Its limits across runtimes (`concurrency 2 per key`, `rate 10/1s`), as its runtimes report them. */
  limits: string[];
  /** Jobs waiting for a concurrency or rate limit (out of `queued`); null when unknown. */
  waiting: number | null;
}

/** Every function seen, and how many runtimes answered. */
export interface Overview {
  runtimes: number;
  functions: FunctionOverview[];
  /** Outbox rows waiting to be published and the oldest one's age; null when no runtime said. */
  outbox: { count: number; oldestAgeMs: number } | null;
  /** How long gathering took. */
  gatheredMs: number;
}

/** Options of gathering the overview. */
export interface GatherOptions {
  /** The jobs stream whose consumers hold queue depths. */
  stream: string;
  /** Longest to wait for runtimes' replies. @default 1500 */
  maxWaitMs?: number;
  /** Stop waiting once no reply came for this long after the last one. @default 300 */
  stallMs?: number;
}

/**
 * Asks every runtime for its `$SRV.STATS` and reads the functions' consumers, then adds them up
 * per function. Functions with queued jobs but no runtime appear with zero instances.
 */
export async function gatherOverview(nc: NatsConnection, options: GatherOptions): Promise<Overview> {
  const started = performance.now();
  const [replies, depths, schedules, waiting] = await Promise.all([
    gatherStats(nc, options.maxWaitMs ?? 1_500, options.stallMs ?? 300),
    readDepths(nc, options.stream),
    readSchedules(nc).catch(() => []),
    jetstreamManager(nc)
      .then((manager) => readWaitingJobs(manager, options.stream))
      .catch(() => undefined),
  ]);
  const nextDue = new Map(schedules.map((schedule) => [schedule.fn, schedule.nextDueAt]));
  const functions = new Map<string, Accumulator>();
  const accumulator = (fn: string): Accumulator => {
    let entry = functions.get(fn);
    if (!entry) {
      entry = newAccumulator(fn);
      functions.set(fn, entry);
    }
    return entry;
  };
  for (const reply of replies) for (const endpoint of reply.endpoints ?? []) addEndpoint(accumulator, endpoint);
  for (const fn of depths?.keys() ?? []) accumulator(fn);
  for (const fn of waiting?.keys() ?? []) accumulator(fn);
  const list = [...functions.values()].map((entry) => ({
    ...finish(entry, depths),
    nextDueAt: nextDue.get(entry.fn) ?? null,
    limits: [...entry.limits],
    waiting: waiting ? (waiting.get(entry.fn) ?? 0) : null,
  }));
  list.sort((a, b) => a.function.localeCompare(b.function));
  return {
    runtimes: replies.length,
    functions: list,
    outbox: outboxOf(replies),
    gatheredMs: Math.round(performance.now() - started),
  };
}

async function gatherStats(nc: NatsConnection, maxWait: number, stall: number): Promise<ServiceStats[]> {
  const replies: ServiceStats[] = [];
  try {
    const messages = await nc.requestMany(`${SERVICE_API_PREFIX}.STATS.${SERVICE_NAME}`, "", {
      strategy: "stall",
      stall,
      maxWait,
    });
    for await (const message of messages) {
      try {
        const stats = message.json<ServiceStats>();
        if (stats.type === "io.nats.micro.v1.stats_response") replies.push(stats);
      } catch {
        // Not a stats reply (a status message or a stranger's reply): ignore it.
      }
    }
  } catch (error) {
    // No runtime is listening: the overview shows only what the stream knows.
    if (!/no responders/i.test((error as Error).message ?? "")) throw error;
  }
  return replies;
}

async function readDepths(nc: NatsConnection, stream: string): Promise<Map<string, QueueDepth> | undefined> {
  try {
    return await listQueueDepths(await jetstreamManager(nc), stream);
  } catch {
    // No JetStream or no jobs stream yet: queue depths are unknown, the rest still shows.
    return undefined;
  }
}

interface Accumulator {
  fn: string;
  instances: number;
  uptimeMs: number | null;
  calls: number;
  jobs: number;
  succeeded: number;
  inFlight: number;
  memoryBytes: number;
  /** Processes already counted in memoryBytes (two runtimes may share one process). */
  processes: Set<string>;
  ratePerSecond: number;
  processingNanos: number;
  maxMs: number;
  histogram: ReturnType<typeof emptyHistogram>;
  errors: ErrorCounts;
  errorCount: number;
  retries: number;
  dead: number;
  limits: Set<string>;
}

function newAccumulator(fn: string): Accumulator {
  return {
    fn,
    instances: 0,
    uptimeMs: null,
    calls: 0,
    jobs: 0,
    succeeded: 0,
    inFlight: 0,
    memoryBytes: 0,
    processes: new Set(),
    ratePerSecond: 0,
    processingNanos: 0,
    maxMs: 0,
    histogram: emptyHistogram(),
    errors: emptyErrorCounts(),
    errorCount: 0,
    retries: 0,
    dead: 0,
    limits: new Set(),
  };
}

function addEndpoint(accumulator: (fn: string) => Accumulator, endpoint: ServiceStats["endpoints"][number]): void {
  const data = endpoint.data;
  if (!data?.function) return;
  const entry = accumulator(data.function);
  entry.instances++;
  entry.uptimeMs = Math.max(entry.uptimeMs ?? 0, data.process.uptime_ms);
  entry.calls += data.calls;
  entry.jobs += data.jobs;
  entry.succeeded += data.succeeded;
  entry.inFlight += data.in_flight;
  const processKey = `${data.process.hostname}:${data.process.pid}`;
  if (!entry.processes.has(processKey)) entry.memoryBytes += data.process.rss_bytes;
  entry.processes.add(processKey);
  entry.ratePerSecond += data.rate_per_second;
  entry.processingNanos += endpoint.processing_time;
  entry.maxMs = Math.max(entry.maxMs, data.duration_ms.max);
  mergeHistogram(entry.histogram, data.duration_histogram);
  for (const kind of Object.keys(entry.errors) as (keyof ErrorCounts)[]) entry.errors[kind] += data.errors[kind] ?? 0;
  entry.errorCount += endpoint.num_errors;
  entry.retries += data.retries;
  entry.dead += data.dead;
  for (const limit of data.limits ?? []) entry.limits.add(limit);
}

/** Every runtime reads the same outbox table; take the largest (freshest) figure. */
function outboxOf(replies: ServiceStats[]): Overview["outbox"] {
  let outbox: Overview["outbox"] = null;
  for (const reply of replies) {
    for (const endpoint of reply.endpoints ?? []) {
      const lag = endpoint.data?.process?.outbox;
      if (lag && (!outbox || lag.count > outbox.count)) outbox = { count: lag.count, oldestAgeMs: lag.oldest_age_ms };
    }
  }
  return outbox;
}

function finish(
  entry: Accumulator,
  depths: Map<string, QueueDepth> | undefined,
): Omit<FunctionOverview, "nextDueAt" | "limits" | "waiting"> {
  const depth = depths?.get(entry.fn);
  const queued = depths ? (depth?.pending ?? 0) : null;
  const finished = entry.succeeded + entry.errorCount;
  const rate = Math.round(entry.ratePerSecond * 1_000) / 1_000;
  return {
    function: entry.fn,
    instances: entry.instances,
    uptimeMs: entry.uptimeMs,
    served: finished,
    calls: entry.calls,
    jobs: entry.jobs,
    inFlight: entry.inFlight,
    memoryBytes: entry.memoryBytes,
    queued,
    queuedPriority: depths ? (depth?.priorityPending ?? 0) : null,
    ackPending: depths ? (depth?.ackPending ?? 0) : null,
    ratePerSecond: rate,
    drainMs: queued === null ? null : queued === 0 ? 0 : rate > 0 ? Math.round((queued / rate) * 1_000) : null,
    duration: summarizeDurations(entry.histogram, entry.processingNanos / 1_000_000, finished, entry.maxMs),
    errors: entry.errors,
    errorCount: entry.errorCount,
    retries: entry.retries,
    dead: entry.dead,
  };
}
