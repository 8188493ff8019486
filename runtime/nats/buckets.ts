import { type KV, Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { bucketReplication, type Replication, SINGLE_REPLICA, withReplicaHint } from "./stream-replicas";

/**
 * Creates one of jetfn's key-value buckets, or opens it when it exists: one value per key, with the
 * deployment's replicas and placement. `ttl` (ms) ages out entries nobody removed.
 */
export function ensureBucket(
  nc: NatsConnection,
  name: string,
  options: { ttl?: number } = {},
  replication: Replication = SINGLE_REPLICA,
): Promise<KV> {
  return withReplicaHint(replication, () =>
    new Kvm(nc).create(name, { history: 1, ...options, ...bucketReplication(replication) }),
  );
}

/** Opens a bucket another part of jetfn created; rejects when it does not exist. */
export function openBucket(nc: NatsConnection, name: string): Promise<KV> {
  return new Kvm(nc).open(name);
}
