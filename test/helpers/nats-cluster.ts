import { type NatsCluster, type NatsClusterOptions, startNatsClusterProcesses } from "./nats-cluster-processes";
import { stopWhenTestEnds } from "./test-scope";

export type { NatsCluster as TestNatsCluster, NatsClusterOptions as TestNatsClusterOptions };

/**
 * Starts deploy/nats-cluster/n1.conf..n3.conf on free loopback ports, each node with its own
 * temporary store (nats-cluster-processes.ts); started inside a test, it is stopped when the test ends.
 */
export async function startNatsCluster(options: NatsClusterOptions = {}): Promise<NatsCluster> {
  const cluster = await startNatsClusterProcesses(options);
  stopWhenTestEnds(() => cluster.stop());
  return cluster;
}
