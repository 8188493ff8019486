import { resolveConfig } from "../config";
import { type FunctionOverview, gatherOverview } from "../inspect/function-overview";
import { createClient } from "../sdk/client";
import { formatDuration } from "../support/duration";
import { printJsonLines } from "./output";
import { type Column, formatTable } from "./table";

/** What `jetfn stats --json` prints per function. */
export interface FunctionStatsLine {
  function: string;
  instances: number;
  count: number;
  calls: number;
  jobs: number;
  inFlight: number;
  duration_ms: { mean: number; median: number; p99: number; max: number };
  errors: FunctionOverview["errors"] & { total: number };
  retries: number;
  dead: number;
}

const ms = (value: number): string => formatDuration(value);

const COLUMNS: Column<FunctionStatsLine>[] = [
  { header: "FUNCTION", value: (row) => row.function },
  { header: "COUNT", value: (row) => String(row.count), right: true },
  { header: "MEAN", value: (row) => ms(row.duration_ms.mean), right: true },
  { header: "MEDIAN", value: (row) => ms(row.duration_ms.median), right: true },
  { header: "P99", value: (row) => ms(row.duration_ms.p99), right: true },
  { header: "ERRORS", value: (row) => String(row.errors.total), right: true },
  { header: "INVALID INPUT", value: (row) => String(row.errors.invalid_input), right: true },
  { header: "HANDLER", value: (row) => String(row.errors.handler_error), right: true },
  { header: "TIMEOUT", value: (row) => String(row.errors.timeout), right: true },
  { header: "NON-RETRYABLE", value: (row) => String(row.errors.non_retryable), right: true },
  { header: "OTHER", value: (row) => String(row.errors.other), right: true },
  { header: "RETRIES", value: (row) => String(row.retries), right: true },
  { header: "DEAD", value: (row) => String(row.dead), right: true },
];

/** `jetfn stats [fn]`: durations and errors by kind per function, added up across runtimes. */
export async function statsCommand(fn: string | undefined, options: { json?: boolean }): Promise<void> {
  const config = resolveConfig();
  const client = await createClient();
  try {
    const overview = await gatherOverview(client.connection, { stream: config.streamName });
    const lines = overview.functions
      .filter((entry) => entry.instances > 0 && (fn === undefined || entry.function === fn))
      .map(statsLine);
    if (options.json) printJsonLines(lines);
    else if (lines.length === 0)
      process.stdout.write(fn ? `no running runtime serves ${fn}\n` : "no running runtime answered\n");
    else
      process.stdout.write(
        `${formatTable(COLUMNS, lines)}since each runtime started; ${overview.runtimes} runtime(s)\n`,
      );
  } finally {
    await client.close();
  }
}

function statsLine(entry: FunctionOverview): FunctionStatsLine {
  return {
    function: entry.function,
    instances: entry.instances,
    count: entry.served,
    calls: entry.calls,
    jobs: entry.jobs,
    inFlight: entry.inFlight,
    duration_ms: {
      mean: entry.duration.mean,
      median: entry.duration.median,
      p99: entry.duration.p99,
      max: entry.duration.max,
    },
    errors: { ...entry.errors, total: entry.errorCount },
    retries: entry.retries,
    dead: entry.dead,
  };
}
