import { type KV, Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { bucketReplication, type Replication, SINGLE_REPLICA, withReplicaHint } from "./stream-replicas";

/**
 * Creates one of jetfn's key-value buckets, or opens it when it exists: one value per key, with the
 * deployment's replicas and placement. `ttl` (ms) ages out entries nobody removed. Runtimes starting
 * together race to create it; the loser's create can be refused ("subjects overlap with an existing
 * stream", seen in CI with two runtimes starting at once), and then it opens the bucket the winner made.
 */
export async function ensureBucket(
  nc: NatsConnection,
  name: string,
  options: { ttl?: number } = {},
  replication: Replication = SINGLE_REPLICA,
): Promise<KV> {
  try {
    return await withReplicaHint(replication, () =>
      new Kvm(nc).create(name, { history: 1, ...options, ...bucketReplication(replication) }),
    );
  } catch (error) {
    const made = await openBucket(nc, name).catch(() => undefined);
    if (made) return made;
    throw error;
  }
}

/** Opens a bucket another part of jetfn created; rejects when it does not exist. */
export function openBucket(nc: NatsConnection, name: string): Promise<KV> {
  return new Kvm(nc).open(name);
}
