import type { NatsConnection } from "@nats-io/transport-node";
import type { Logger } from "pino";
import { connectDatabase } from "../db/client";
import type { InvocationStats } from "../invocation/invocation-stats";
import type { QueueDepthReader } from "../nats/queue-depth";
import { createRuntimeMetrics } from "../support/metrics";
import type { RuntimeEmitter } from "../triggers/events";
import { livenessRoute, readinessRoute } from "./health-routes";
import { metricsRoute } from "./metrics-route";
import { createReadinessCheck, type RuntimePhase } from "./readiness";
import { startOpsServer } from "./server";

/** What the operations endpoint serves from. */
export interface OpsEndpointOptions {
  host: string;
  port: number;
  /** Readiness opens a connection of its own to this database. */
  databaseUrl: string;
  nats: NatsConnection;
  events: RuntimeEmitter;
  stats: InvocationStats;
  queueDepth: QueueDepthReader;
  logger: Logger;
  /** Functions loaded from the folder that do not serve yet. */
  undeployed: () => string[];
  /** Where the runtime is in its life: readiness is false but while serving. */
  phase: () => RuntimePhase;
}

/** The running endpoint. */
export interface OpsEndpoint {
  close(): Promise<void>;
}

/**
 * Serves `/metrics`, `/livez` and `/readyz` on one host and port, from the start of a runtime to
 * its end. Readiness asks Postgres on a connection of its own, so a pool busy with jobs does not
 * read as a database that is down.
 */
export async function startOpsEndpoint(options: OpsEndpointOptions): Promise<OpsEndpoint> {
  const { logger } = options;
  const metrics = createRuntimeMetrics({
    events: options.events,
    stats: options.stats,
    queueDepth: options.queueDepth,
    logger,
  });
  const probeDatabase = connectDatabase({ url: options.databaseUrl, poolSize: 1, applicationName: "jetfn-readiness" });
  const readiness = createReadinessCheck({
    nats: options.nats,
    sql: probeDatabase.sql,
    undeployed: options.undeployed,
    phase: options.phase,
  });
  const release = async (): Promise<void> => {
    metrics.close();
    await probeDatabase.close();
  };
  try {
    const server = await startOpsServer({
      host: options.host,
      port: options.port,
      routes: {
        "/metrics": metricsRoute(metrics.registry),
        "/livez": livenessRoute,
        "/readyz": readinessRoute(readiness),
      },
      logger,
    });
    return {
      async close() {
        await server.close();
        await release();
      },
    };
  } catch (error) {
    await release();
    throw error;
  }
}
