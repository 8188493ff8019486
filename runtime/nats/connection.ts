import { connect, type NatsConnection } from "@nats-io/transport-node";
import type { Logger } from "pino";
import { JetfnError } from "../support/errors";
import { redactUrls } from "../support/logger";
import { type NatsAuth, natsAuthOptions } from "./nats-auth";

/** How to reach NATS. */
export interface NatsOptions {
  url: string;
  /** User and password, token, credentials, NKey or TLS files. @default none */
  auth?: NatsAuth;
  /** Shown by the server's monitoring. @default "jetfn" */
  name?: string;
  /** Keep retrying the first connection instead of failing at once. @default false */
  waitOnFirstConnect?: boolean;
}

/**
 * A ping every 5 s, and the connection is given up once 3 are unanswered, so about 20 s after the
 * server stops answering (a network partition, a server frozen) the client reconnects to another
 * server of the cluster. nats.js's defaults (2 min, 2 unanswered) left a cut-off runtime unaware for
 * 4-6 minutes.
 */
const NATS_PING_INTERVAL_MS = 5_000;
const NATS_MAX_PINGS_OUT = 3;

/** Connects with endless reconnects; throws E_UNAVAILABLE naming the URL if nothing answers. */
export async function connectNats(options: NatsOptions, logger?: Logger): Promise<NatsConnection> {
  const auth = await natsAuthOptions(options.auth);
  let connection: NatsConnection;
  try {
    connection = await connect({
      servers: options.url.split(",").map((server) => server.trim()),
      name: options.name ?? "jetfn",
      ...auth,
      maxReconnectAttempts: -1,
      reconnectTimeWait: 500,
      pingInterval: NATS_PING_INTERVAL_MS,
      maxPingOut: NATS_MAX_PINGS_OUT,
      waitOnFirstConnect: options.waitOnFirstConnect ?? false,
    });
  } catch (error) {
    throw new JetfnError(
      "E_UNAVAILABLE",
      `cannot connect to NATS at ${redactUrls(options.url)}: ${(error as Error).message}`,
      {
        cause: error,
      },
    );
  }
  if (logger) void logStatus(connection, logger);
  return connection;
}

/** Logs disconnects and reconnects, so an operator sees NATS going away and coming back. */
async function logStatus(connection: NatsConnection, logger: Logger): Promise<void> {
  try {
    for await (const status of connection.status()) {
      switch (status.type) {
        case "staleConnection":
          logger.warn("NATS answered no pings (a network partition, or a frozen server); reconnecting.");
          break;
        case "disconnect":
          logger.warn({ server: status.server }, "Disconnected from NATS; reconnecting.");
          break;
        case "reconnect":
          logger.info({ server: status.server }, "Reconnected to NATS.");
          break;
        case "error":
          logger.error({ err: status.error }, "NATS reported an error.");
          break;
        default:
          break;
      }
    }
  } catch (error) {
    logger.debug({ err: error }, "NATS status stream ended.");
  }
}
