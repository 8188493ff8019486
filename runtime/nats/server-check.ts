import type { JetStreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import type { Logger } from "pino";

/** Oldest nats-server release jetfn trusts with acknowledged jobs (earlier ones can lose them on a crash). */
export const MIN_SAFE_NATS_VERSION = "2.10.23";
/** First nats-server release that understands a reason on `+TERM` (older ones ignore the whole term). */
export const TERM_REASON_VERSION = "2.10.4";
/** Replicas of the jobs stream that survive the loss of one server without fsync on every write. */
export const SAFE_REPLICAS = 3;

/** One shortfall of the NATS deployment against the production settings. */
export interface ServerWarning {
  check: "version" | "replicas";
  message: string;
}

/** True when version `a` is older than `b` (major.minor.patch; anything after is ignored). */
export function isOlderVersion(a: string, b: string): boolean {
  const parse = (version: string): number[] => (version.match(/\d+/g) ?? []).slice(0, 3).map(Number);
  const [left, right] = [parse(a), parse(b)];
  for (let index = 0; index < 3; index++) {
    const difference = (left[index] ?? 0) - (right[index] ?? 0);
    if (difference !== 0) return difference < 0;
  }
  return false;
}

/**
 * Compares the server and the jobs stream with the production settings (docs/production.md, "NATS durability").
 * A client sees the server's version and the stream's replicas; it cannot see `sync_interval`, so a
 * single-replica stream is reported with what to check on the server.
 */
export async function checkServer(
  nc: NatsConnection,
  manager: JetStreamManager,
  stream: string,
): Promise<ServerWarning[]> {
  const warnings: ServerWarning[] = [];
  const version = nc.info?.version ?? "unknown";
  if (version === "unknown" || isOlderVersion(version, MIN_SAFE_NATS_VERSION)) {
    warnings.push({
      check: "version",
      message: `nats-server ${version} is older than ${MIN_SAFE_NATS_VERSION}: earlier releases can lose acknowledged jobs when the server crashes; upgrade nats-server`,
    });
  }
  const info = await manager.streams.info(stream);
  const replicas = info.config.num_replicas ?? 1;
  if (replicas < SAFE_REPLICAS) {
    warnings.push({
      check: "replicas",
      message: `stream ${stream} has ${replicas} replica(s): an acknowledged job survives a power loss only if every server runs with sync_interval: always (not visible to clients; check the server config), or with ${SAFE_REPLICAS} replicas on a 3-node cluster (set JETFN_REPLICAS=${SAFE_REPLICAS}; raising it scales existing streams up at the next start)`,
    });
  }
  return warnings;
}

/** Logs each shortfall as one warning line (field `check` names it); never stops the runtime. */
export async function warnAboutServer(
  nc: NatsConnection,
  manager: JetStreamManager,
  stream: string,
  logger: Logger,
): Promise<void> {
  try {
    for (const warning of await checkServer(nc, manager, stream)) {
      logger.warn({ check: warning.check, nats: nc.info?.version }, `Production check: ${warning.message}.`);
    }
  } catch (error) {
    logger.warn({ err: error }, "Could not check the NATS server's production settings.");
  }
}
