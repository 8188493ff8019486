import type { TestEnvironment } from "./environment";
import { eventually } from "./environment";

/** One finished job of a flow-control fixture, as its record keeps it. */
export interface FlowRun {
  id: string;
  status: string;
  attempts: number;
  input: Record<string, unknown> | null;
  result: { start: number; end?: number; attempt?: number } | null;
}

/** Waits until `count` jobs of `fn` have ended, and returns them. */
export async function finishedRuns(
  env: TestEnvironment,
  fn: string,
  count: number,
  timeoutMs = 60_000,
): Promise<FlowRun[]> {
  return eventually(async () => {
    const rows = (await env.database.sql`
      select id, status, attempts, input, result from jetfn.invocations
      where function = ${fn} and status in ('succeeded', 'dead', 'cancelled')`) as unknown as FlowRun[];
    return rows.length >= count ? rows : undefined;
  }, timeoutMs);
}

/** Most runs whose [start, end) overlap at one moment. */
export function maxOverlap(runs: readonly FlowRun[]): number {
  const edges: [number, number][] = [];
  for (const run of runs) {
    if (!run.result) continue;
    edges.push([run.result.start, 1], [run.result.end ?? run.result.start, -1]);
  }
  // An end at the same millisecond as a start counts first: the slot was free again.
  edges.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let now = 0;
  let most = 0;
  for (const [, change] of edges) {
    now += change;
    most = Math.max(most, now);
  }
  return most;
}
