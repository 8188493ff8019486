import { resolveConfig } from "../config";
import { type FunctionOverview, gatherOverview, type Overview } from "../inspect/function-overview";
import { createClient } from "../sdk/client";
import { formatDuration } from "../support/duration";
import { printJsonLines } from "./output";
import { type Column, formatBytes, formatTable } from "./table";

/** Options of `jetfn ls`. */
export interface LsCommandOptions {
  json?: boolean;
  watch?: boolean;
}

/** How often `--watch` refreshes. */
export const WATCH_INTERVAL_MS = 2_000;

const COLUMNS: Column<FunctionOverview>[] = [
  { header: "FUNCTION", value: (row) => row.function },
  { header: "INSTANCES", value: (row) => String(row.instances), right: true },
  { header: "UPTIME", value: (row) => (row.uptimeMs === null ? "-" : formatDuration(row.uptimeMs)), right: true },
  { header: "SERVED", value: (row) => String(row.served), right: true },
  { header: "IN FLIGHT", value: (row) => String(row.inFlight), right: true },
  { header: "MEMORY", value: (row) => (row.instances === 0 ? "-" : formatBytes(row.memoryBytes)), right: true },
  { header: "QUEUED", value: (row) => queuedText(row), right: true },
  { header: "ACK PENDING", value: (row) => (row.ackPending === null ? "?" : String(row.ackPending)), right: true },
  { header: "WAITING", value: (row) => (row.waiting === null ? "?" : String(row.waiting)), right: true },
  { header: "RATE/S (1M)", value: (row) => row.ratePerSecond.toFixed(2), right: true },
  { header: "TIME LEFT", value: timeLeft, right: true },
  { header: "NEXT DUE", value: (row) => (row.nextDueAt ? row.nextDueAt.replace("T", " ").slice(0, 19) : "") },
  { header: "LIMITS", value: (row) => row.limits.join(", ") },
];

/** `jetfn ls`: one row per function across every running runtime. */
export async function lsCommand(options: LsCommandOptions): Promise<void> {
  const config = resolveConfig();
  const client = await createClient();
  try {
    for (;;) {
      const overview = await gatherOverview(client.connection, { stream: config.streamName });
      if (options.json) printJsonLines(overview.functions);
      else
        process.stdout.write(
          `${options.watch && process.stdout.isTTY ? "\u001b[2J\u001b[H" : ""}${describe(overview)}`,
        );
      if (!options.watch) return;
      await new Promise((resolve) => setTimeout(resolve, WATCH_INTERVAL_MS));
    }
  } finally {
    await client.close();
  }
}

function describe(overview: Overview): string {
  if (overview.functions.length === 0) {
    return "no functions: no runtime answered and the jobs stream has no function consumers\n";
  }
  const runtimes = `${overview.runtimes} runtime${overview.runtimes === 1 ? "" : "s"} answered in ${overview.gatheredMs}ms`;
  const outbox = overview.outbox
    ? `; outbox: ${overview.outbox.count} waiting${overview.outbox.count > 0 ? `, oldest ${formatDuration(overview.outbox.oldestAgeMs)}` : ""}`
    : "";
  return `${formatTable(COLUMNS, overview.functions)}${runtimes}${outbox}\n`;
}

/** Jobs waiting, and how many of them have a priority: `5000 (12 prio)`. */
function queuedText(row: FunctionOverview): string {
  if (row.queued === null) return "?";
  return row.queuedPriority ? `${row.queued} (${row.queuedPriority} prio)` : String(row.queued);
}

/** `-` with nothing queued, `stalled` when jobs wait and none finish, else queued / rate. */
function timeLeft(row: FunctionOverview): string {
  if (row.queued === null) return "?";
  if (row.queued === 0) return "-";
  return row.drainMs === null ? "stalled" : `~${formatDuration(row.drainMs)}`;
}
