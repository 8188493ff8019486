// Names of the cluster scenario's metrics, shared by the scenario (cluster-scale.ts) and its report
// section (cluster-section.ts).
import type { JobKind } from "./contenders/job-contender";
import { CPU_FIGURES } from "./cpu-use";

/** The job kinds drained, with their metric's stem. */
export const CLUSTER_KINDS: ReadonlyArray<{ kind: JobKind; metric: string }> = [
  { kind: "noop", metric: "no-op jobs drained" },
  { kind: "insert", metric: "insert-one-row jobs drained" },
];

/** Names of a drain's CPU figures, recorded as "<metric>: <name>". */
export const CLUSTER_CPU = {
  runtimes: "CPU per job, runtimes (Node, summed)",
  postgres: CPU_FIGURES.postgres,
  nats: "CPU per job, NATS (3 nodes, summed)",
  busy: CPU_FIGURES.busy,
} as const;

/** Metric of a drain by `runtimes` runtimes: "no-op jobs drained, 2 runtimes". */
export function clusterMetric(stem: string, runtimes: number): string {
  return `${stem}, ${runtimes} runtime${runtimes === 1 ? "" : "s"}`;
}

/** Contender name of a replica count: R1, R3. */
export function replicasLabel(replicas: number): string {
  return `R${replicas}`;
}
