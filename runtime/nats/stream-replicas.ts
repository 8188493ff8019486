import type { JetStreamManager, Placement, StreamConfig } from "@nats-io/jetstream";
import type { Logger } from "pino";
import { JetfnError } from "../support/errors";
import { streamInfo } from "./stream-lookup";

/** How many NATS servers keep a copy of each stream and key-value bucket jetfn creates, and which. */
export interface Replication {
  /** Copies of each stream and bucket: 1, 3 or 5 (3 survives the loss of one server of a cluster). */
  readonly replicas: number;
  /** Server tags (`server_tags` in nats-server's config) the copies must be placed on; empty: anywhere. */
  readonly placementTags: readonly string[];
}

/** One copy, placed anywhere: what `jetfn dev` and a single nats-server need. */
export const SINGLE_REPLICA: Replication = Object.freeze({ replicas: 1, placementTags: Object.freeze([]) });

/** Replica counts JetStream accepts for a stream (an even count gains nothing over one less). */
export const ALLOWED_REPLICAS: readonly number[] = Object.freeze([1, 3, 5]);

/** The stream config fields that carry `replication`, for a stream or bucket being created. */
export function replicationConfig(replication: Replication): Pick<StreamConfig, "num_replicas"> & {
  placement?: Placement;
} {
  return {
    num_replicas: replication.replicas,
    ...(replication.placementTags.length > 0 ? { placement: placementOf(replication) } : {}),
  };
}

/** The key-value bucket options that carry `replication`. */
export function bucketReplication(replication: Replication): { replicas: number; placement?: Placement } {
  return {
    replicas: replication.replicas,
    ...(replication.placementTags.length > 0 ? { placement: placementOf(replication) } : {}),
  };
}

/**
 * Raises each stream to `replication.replicas` in place, when it has fewer (the server copies its
 * messages to the new replicas while it keeps serving). Never lowers: a stream given more replicas
 * by hand keeps them, so a runtime started with the default of 1 cannot take a cluster's
 * durability away. A key-value bucket is the stream `KV_<bucket>`.
 */
export async function scaleUpStreams(
  manager: JetStreamManager,
  streams: readonly string[],
  replication: Replication,
  logger: Logger,
): Promise<void> {
  for (const stream of streams) {
    const info = await manager.streams.info(stream);
    const current = info.config.num_replicas ?? 1;
    if (current > replication.replicas) {
      logger.info(
        { stream, replicas: current, configured: replication.replicas },
        "Stream keeps more replicas than JETFN_REPLICAS asks for; jetfn never lowers them.",
      );
    }
    if (current >= replication.replicas) continue;
    // Only the count changes: a new placement at the same time would ask the server to move the
    // stream as well, which is the operator's call.
    await withReplicaHint(replication, () =>
      manager.streams.update(stream, { ...info.config, num_replicas: replication.replicas }),
    );
    logger.info({ stream, from: current, to: replication.replicas }, "Scaled stream up to JETFN_REPLICAS replicas.");
  }
}

/**
 * Runs a stream or bucket creation or update, turning the server's refusal of more replicas than
 * it has (a single server, a cluster too small, no server with the placement tags) into an error
 * naming the setting.
 */
export async function withReplicaHint<T>(replication: Replication, run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (error) {
    const message = (error as Error).message ?? "";
    if (replication.replicas > 1 || replication.placementTags.length > 0) {
      if (/replica|peer|placement|cluster|resources/i.test(message)) {
        const tags = replication.placementTags.length > 0 ? ` tagged ${replication.placementTags.join(", ")}` : "";
        throw new JetfnError(
          "E_CONFIG_INVALID",
          `JETFN_REPLICAS=${replication.replicas} needs a NATS cluster with JetStream on at least ${replication.replicas} servers${tags}; the server said: ${message}`,
          { cause: error },
        );
      }
    }
    throw error;
  }
}

function placementOf(replication: Replication): Placement {
  // An empty cluster name places the copies on any cluster the tags match.
  return { cluster: "", tags: [...replication.placementTags] };
}

/**
 * Creates a stream unless it exists, with the deployment's replicas and placement. Runtimes that
 * start or deploy together race to create it: the one that loses (the server answers "subjects
 * overlap" or "name already in use") finds it made, which is all it wanted. True if this call made it.
 */
export async function addStreamIfMissing(
  manager: JetStreamManager,
  config: Partial<StreamConfig> & { name: string },
  replication: Replication,
): Promise<boolean> {
  if (await streamInfo(manager, config.name)) return false;
  try {
    await withReplicaHint(replication, () => manager.streams.add({ ...config, ...replicationConfig(replication) }));
    return true;
  } catch (error) {
    if (await manager.streams.info(config.name).catch(() => undefined)) return false;
    throw error;
  }
}
