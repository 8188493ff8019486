import type { Logger } from "pino";
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import type { InvocationStats } from "../invocation/invocation-stats";
import type { QueueDepth, QueueDepthReader } from "../nats/queue-depth";
import type { RuntimeEmitter, RuntimeEvents } from "../triggers/events";
import { errorKindOf } from "./error-codes";

/** Bucket bounds (seconds) of the invocation duration histogram. */
export const DURATION_BUCKETS_SECONDS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];

/**
 * prom-client's default gauges named like counters: `promtool check metrics` refuses a gauge ending
 * in `_total`. Each is the sum of the same gauge by `type` (`nodejs_active_handles{type}`), which
 * stays: `sum(nodejs_active_handles)` gives the same figure.
 */
const MISNAMED_DEFAULT_METRICS = [
  "nodejs_active_handles_total",
  "nodejs_active_requests_total",
  "nodejs_active_resources_total",
];

/** What the metrics read from the runtime. */
export interface MetricsOptions {
  events: RuntimeEmitter;
  /** Source of the in-flight gauge (it pairs each start with its end by invocation id). */
  stats: InvocationStats;
  queueDepth: QueueDepthReader;
  logger: Logger;
}

/** jetfn's Prometheus registry, fed by the runtime's events. */
export interface RuntimeMetrics {
  readonly registry: Registry;
  /** Stops listening to the runtime's events. */
  close(): void;
}

/** Builds the registry: jetfn's metrics and Node's process metrics, every name as promtool wants it. */
export function createRuntimeMetrics(options: MetricsOptions): RuntimeMetrics {
  const registry = new Registry();
  const detach = registerInvocationMetrics(registry, options.events, options.stats);
  registerQueueMetrics(registry, options.queueDepth, options.logger);
  collectDefaultMetrics({ register: registry });
  for (const name of MISNAMED_DEFAULT_METRICS) registry.removeSingleMetric(name);
  return { registry, close: detach };
}

/** Counters, error counters by kind and duration histograms; returns a function that stops listening. */
function registerInvocationMetrics(registry: Registry, events: RuntimeEmitter, stats: InvocationStats): () => void {
  const invocations = new Counter({
    name: "jetfn_invocations_total",
    help: "Finished invocations by function, kind (call or job) and outcome (succeeded or failed).",
    labelNames: ["fn", "kind", "outcome"] as const,
    registers: [registry],
  });
  const errors = new Counter({
    name: "jetfn_invocation_errors_total",
    help: "Failed invocations by function and error kind (invalid_input, handler_error, timeout, non_retryable, other).",
    labelNames: ["fn", "error_kind", "code"] as const,
    registers: [registry],
  });
  const retries = new Counter({
    name: "jetfn_job_retries_total",
    help: "Job attempts that failed and will be tried again.",
    labelNames: ["fn"] as const,
    registers: [registry],
  });
  const dead = new Counter({
    name: "jetfn_jobs_dead_total",
    help: "Jobs that failed for good (after their last attempt, or not retryable).",
    labelNames: ["fn"] as const,
    registers: [registry],
  });
  const duration = new Histogram({
    name: "jetfn_invocation_duration_seconds",
    help: "Duration of finished invocations.",
    labelNames: ["fn", "kind"] as const,
    buckets: DURATION_BUCKETS_SECONDS,
    registers: [registry],
  });
  new Gauge({
    name: "jetfn_invocations_in_flight",
    help: "Invocations running in this process.",
    labelNames: ["fn"] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const entry of stats.all()) this.set({ fn: entry.fn }, entry.inFlight);
    },
  });
  const onSuccess = (...[event]: RuntimeEvents["invocation:success"]): void => {
    invocations.inc({ fn: event.fn, kind: event.kind, outcome: "succeeded" });
    duration.observe({ fn: event.fn, kind: event.kind }, event.durationMs / 1_000);
  };
  const onFailure = (...[event]: RuntimeEvents["invocation:failure"]): void => {
    invocations.inc({ fn: event.fn, kind: event.kind, outcome: "failed" });
    errors.inc({ fn: event.fn, error_kind: errorKindOf(event.error.code), code: event.error.code });
    duration.observe({ fn: event.fn, kind: event.kind }, event.durationMs / 1_000);
    if (event.kind === "job") (event.final ? dead : retries).inc({ fn: event.fn });
  };
  const refusedReplies = new Counter({
    name: "jetfn_refused_replies_total",
    help: "Requests dropped because their reply subject is not an inbox, by API (call, status, dlq, discovery).",
    labelNames: ["api"] as const,
    registers: [registry],
  });
  const onRefusedReply = (...[event]: RuntimeEvents["reply:refused"]): void => {
    refusedReplies.inc({ api: event.api });
  };
  events.on("invocation:success", onSuccess);
  events.on("invocation:failure", onFailure);
  events.on("reply:refused", onRefusedReply);
  const detachConnection = registerConnectionMetrics(registry, events);
  return () => {
    events.off("invocation:success", onSuccess);
    events.off("invocation:failure", onFailure);
    events.off("reply:refused", onRefusedReply);
    detachConnection();
  };
}

/** Whether this process is connected to NATS, and how often it lost the connection. */
function registerConnectionMetrics(registry: Registry, events: RuntimeEmitter): () => void {
  const connected = new Gauge({
    name: "jetfn_nats_connected",
    help: "1 while this process is connected to NATS, 0 while it is reconnecting (server gone, or a partition).",
    registers: [registry],
  });
  const disconnects = new Counter({
    name: "jetfn_nats_disconnects_total",
    help: "Times this process lost its NATS connection (a server gone, or no answer to pings: a partition).",
    registers: [registry],
  });
  // The metrics start with the runtime, which is connected by then.
  connected.set(1);
  const onDisconnected = (): void => {
    connected.set(0);
    disconnects.inc();
  };
  const onReconnected = (): void => connected.set(1);
  events.on("nats:disconnected", onDisconnected);
  events.on("nats:reconnected", onReconnected);
  return () => {
    events.off("nats:disconnected", onDisconnected);
    events.off("nats:reconnected", onReconnected);
  };
}

/** Queue depth per function, read from the functions' consumers at scrape time. */
function registerQueueMetrics(registry: Registry, reader: QueueDepthReader, logger: Logger): void {
  const read = async (): Promise<Map<string, QueueDepth>> => {
    try {
      // One cached consumer listing serves both gauges of a scrape.
      return await reader.read();
    } catch (error) {
      logger.debug({ err: error }, "Could not read queue depths for metrics.");
      return new Map();
    }
  };
  new Gauge({
    name: "jetfn_queue_depth",
    help: "Jobs waiting in the stream for a runtime, per function (the consumer's num_pending).",
    labelNames: ["fn"] as const,
    registers: [registry],
    async collect() {
      this.reset();
      for (const [fn, depth] of await read()) this.set({ fn }, depth.pending);
    },
  });
  new Gauge({
    name: "jetfn_queue_ack_pending",
    help: "Jobs handed out to runtimes and not yet acknowledged, per function (all runtimes).",
    labelNames: ["fn"] as const,
    registers: [registry],
    async collect() {
      this.reset();
      for (const [fn, depth] of await read()) this.set({ fn }, depth.ackPending);
    },
  });
}
