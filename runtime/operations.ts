import type { JetStreamClient, JetStreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import type { Logger } from "pino";
import type { ResolvedConfig } from "./config";
import type { DatabaseClient } from "./db/client";
import type { OutboxLag } from "./db/outbox";
import type { InvocationStats } from "./invocation/invocation-stats";
import { startDeadLetterApi } from "./nats/dead-letter-api";
import { createQueueDepthReader } from "./nats/queue-depth";
import type { ReplyGuard } from "./nats/reply-guard";
import { warnAboutServer } from "./nats/server-check";
import { startServiceDiscovery } from "./nats/service-discovery";
import { startStallWatch, type WatchedPuller } from "./nats/stall-watch";
import { startUnroutedJobs } from "./nats/unrouted-jobs";
import type { OutboxMessage } from "./outbox/outbox-message";
import type { RuntimeEmitter } from "./triggers/events";

/** What the operational parts read from the runtime. */
export interface OperationsContext {
  config: ResolvedConfig;
  nats: NatsConnection;
  js: JetStreamClient;
  manager: JetStreamManager;
  database: DatabaseClient;
  events: RuntimeEmitter;
  logger: Logger;
  /** The runtime's invocation statistics (served through $SRV.STATS and the metrics). */
  stats: InvocationStats;
  /** Names of the functions deployed in this process right now. */
  functions: () => string[];
  /** A deployed function's limits across runtimes, described (for `jetfn ls`). */
  limits?: (fn: string) => string[];
  /** This process's pullers, for the stall watch. */
  pullers: () => WatchedPuller[];
  outboxLag: () => Promise<OutboxLag>;
  /** Warn about the NATS server's production settings. */
  productionChecks: boolean;
  /** How often consumers and the stream are checked. */
  healthCheckMs: number;
  /** Drops API requests whose reply subject is not an inbox. */
  replyGuard: ReplyGuard;
  /** The runtimes' secret, which signs resumptions (a dead job with steps resumed by `jetfn retry`). */
  resumeSecret?: string;
  /** Publishes outbox rows just committed. */
  publishCommitted?: (messages: OutboxMessage[], log: Logger) => Promise<void>;
}

/** The operational parts of a runtime, stopped together. */
export interface Operations {
  close(): Promise<void>;
}

/**
 * Starts what operators rely on besides running functions: statistics and services-protocol
 * discovery, the dead-letter API, production checks, the stall watch and the sweep for jobs no
 * function can take.
 */
export async function startOperations(context: OperationsContext): Promise<Operations> {
  const { config, nats, manager, logger } = context;
  const { stats } = context;
  const queueDepth = createQueueDepthReader(manager, config.streamName);
  const deadLetterApi = startDeadLetterApi({
    nc: nats,
    js: context.js,
    sql: context.database.sql,
    queueGroup: config.queueGroup,
    logger,
    replyGuard: context.replyGuard,
    resumeSecret: context.resumeSecret,
    publishCommitted: context.publishCommitted,
  });
  const discovery = startServiceDiscovery({
    nc: nats,
    queueGroup: config.queueGroup,
    functions: context.functions,
    stats,
    queueDepth,
    outboxLag: context.outboxLag,
    limits: context.limits,
    logger,
    replyGuard: context.replyGuard,
  });
  if (context.productionChecks) void warnAboutServer(nats, manager, config.streamName, logger);
  const stallWatch = startStallWatch({
    manager,
    stream: config.streamName,
    intervalMs: context.healthCheckMs,
    events: context.events,
    logger,
    pullers: context.pullers,
  });
  const unroutedJobs = startUnroutedJobs({
    nc: nats,
    manager,
    sql: context.database.sql,
    stream: config.streamName,
    deployed: context.functions,
    intervalMs: context.healthCheckMs,
    logger,
  });
  return {
    async close() {
      await unroutedJobs.close();
      await stallWatch.close();
      discovery.close();
      await deadLetterApi.close();
    },
  };
}
