import { cpus } from "node:os";
import { CLUSTER_CPU, CLUSTER_KINDS, clusterMetric, replicasLabel } from "./cluster-metrics";
import type { BenchSizes } from "./model";
import type { Summary } from "./report";
import { formatNumber, formatRatio } from "./stats";

const HEADERS = [
  "jobs",
  "replicas",
  "runtimes",
  "jobs/s (range)",
  "vs fewest runtimes",
  "vs R1",
  "runtimes µs/job",
  "Postgres µs/job",
  "NATS µs/job",
  "all µs/job",
  "cores busy",
];

/**
 * The cluster scenario's section of the report: what it measured and how to read it (overhead on a
 * small machine; CPU per job is what to project from), then one row per drain.
 */
export function clusterSection(summaries: readonly Summary[], sizes: BenchSizes, cores = cpus().length): string {
  const text = [
    `One machine runs a 3-node NATS cluster (\`deploy/nats-cluster/\` on free loopback ports, each node with its own store), Postgres and 1 to ${Math.max(...sizes.clusterRuntimes)} runtimes, each runtime a Node process of its own. For each replica count (R1, R3: \`JETFN_REPLICAS\`) and each number of runtimes, the runtimes start and drain ${formatNumber(sizes.clusterWarmupJobs)} jobs of another function to warm up; then the queue is filled with ${formatNumber(sizes.clusterNoopJobs)} no-op or ${formatNumber(sizes.clusterInsertJobs)} insert jobs (one audited row each) while they idle, the function's file is written, every runtime deploys it and they drain the queue together. The rate runs from the first job's start to the last job's end. CPU per job is the CPU time over the drain of the runtimes (summed over their processes), of Postgres (the drain's database and the server's own processes) and of the three nats-servers (summed), divided by the jobs; "all" is their sum.`,
    "",
    `**On this ${cores}-core machine these figures show overhead, not scale.** The three NATS nodes, Postgres and the runtimes share ${cores} cores: once they are busy (the last column), a second or third runtime cannot add throughput, only its own cost (its connections, fetches and acks, the jobs split between more processes), and R3 adds the replication between three servers that compete for the same cores (without the network between machines a real cluster has). **CPU per job is the figure to project from**: each part carries about cores x 1,000,000 / its µs per job jobs a second, so runtimes given 4 cores at 300 µs per job carry about 13,000 jobs/s, if Postgres and NATS are given theirs.`,
    "",
    `| ${HEADERS.join(" | ")} |`,
    `| ${HEADERS.map(() => "---").join(" | ")} |`,
  ];
  const runtimeCounts = [...sizes.clusterRuntimes].sort((a, b) => a - b);
  const fewest = runtimeCounts[0] ?? 1;
  for (const { kind, metric: stem } of CLUSTER_KINDS) {
    for (const replicas of [...sizes.clusterReplicas].sort((a, b) => a - b)) {
      for (const runtimes of runtimeCounts) {
        const find = (metric: string, label = replicasLabel(replicas)): Summary | undefined =>
          summaries.find((summary) => summary.metric === metric && summary.contender === label);
        const rateMetric = clusterMetric(stem, runtimes);
        const rate = find(rateMetric);
        if (!rate) continue;
        const cpu = (figure: string): number | undefined => find(`${rateMetric}: ${figure}`)?.median;
        const parts = [cpu(CLUSTER_CPU.runtimes), cpu(CLUSTER_CPU.postgres), cpu(CLUSTER_CPU.nats)];
        const all = parts.every((part) => part !== undefined)
          ? parts.reduce((sum: number, part) => sum + (part as number), 0)
          : undefined;
        const alone = find(clusterMetric(stem, fewest));
        const r1 = find(rateMetric, replicasLabel(1));
        text.push(
          `| ${[
            kind === "noop" ? "no-op" : "insert",
            replicasLabel(replicas),
            String(runtimes),
            `${formatNumber(rate.median)}${rate.samples > 1 ? ` (${formatNumber(rate.min)}-${formatNumber(rate.max)})` : ""}`,
            runtimes === fewest || !alone ? "" : formatRatio(rate.median / alone.median),
            replicas === 1 || !r1 ? "" : formatRatio(rate.median / r1.median),
            ...[...parts, all].map(micros),
            cpu(CLUSTER_CPU.busy) === undefined ? "" : `${formatNumber(cpu(CLUSTER_CPU.busy) as number)} %`,
          ].join(" | ")} |`,
        );
      }
    }
  }
  return text.join("\n");
}

function micros(value: number | undefined): string {
  return value === undefined ? "" : formatNumber(value);
}
