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
 * The server's refusal of more than one replica when it is not in a cluster at all: no wait helps,
 * so the start fails at once.
 */
const REPLICAS_NOT_SUPPORTED = 10_074;
/** How a server words a refusal of the replicas or placement asked for ("insufficient resources", "no suitable peers for placement"). */
const REPLICA_REFUSAL = /replica|peer|placement|cluster|resources/i;

/**
 * A cluster's refusal of the replicas or placement JETFN_REPLICAS and JETFN_PLACEMENT_TAGS ask for.
 * A cluster still forming, or with a node restarting, refuses so for a while; start-up asks again
 * (nats/until-answered.ts) and fails with this error if it keeps refusing.
 */
export class ReplicaPlacementError extends JetfnError {
  readonly replicas: number;
  readonly placementTags: readonly string[];
  /** The server's own words. */
  readonly serverSaid: string;

  constructor(replication: Replication, serverSaid: string, cause: unknown) {
    super("E_CONFIG_INVALID", replicaHint(replication, serverSaid), { cause });
    this.name = "ReplicaPlacementError";
    this.replicas = replication.replicas;
    this.placementTags = replication.placementTags;
    this.serverSaid = serverSaid;
  }
}

/** True for a cluster's refusal of the replicas or placement asked for, which may pass once the cluster has formed. */
export function isReplicaPlacementRefusal(error: unknown): error is ReplicaPlacementError {
  return error instanceof ReplicaPlacementError;
}

/**
 * Runs a stream or bucket creation or update, turning the server's refusal of more replicas than
 * it has (a single server, a cluster too small or still forming, no server with the placement
 * tags) into an E_CONFIG_INVALID error naming the setting. A single server's refusal is a plain
 * JetfnError; a cluster's is a ReplicaPlacementError, which start-up asks again for a while.
 */
export async function withReplicaHint<T>(replication: Replication, run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (error) {
    const message = (error as Error).message ?? "";
    const asksForCluster = replication.replicas > 1 || replication.placementTags.length > 0;
    if (!asksForCluster || !REPLICA_REFUSAL.test(message)) throw error;
    if ((error as { code?: unknown }).code === REPLICAS_NOT_SUPPORTED) {
      throw new JetfnError("E_CONFIG_INVALID", replicaHint(replication, message), { cause: error });
    }
    throw new ReplicaPlacementError(replication, message, error);
  }
}

function replicaHint(replication: Replication, serverSaid: string): string {
  const tags = replication.placementTags.length > 0 ? ` tagged ${replication.placementTags.join(", ")}` : "";
  return `JETFN_REPLICAS=${replication.replicas} needs a NATS cluster with JetStream on at least ${replication.replicas} servers${tags}; the server said: ${serverSaid}`;
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
