import { resolveConfig } from "../config";
import { replayJobs } from "../nats/replay-jobs";
import { createClient } from "../sdk/client";
import { parseDuration } from "../support/duration";
import { JetfnError } from "../support/errors";
import { printJson } from "./output";

/** Options of `jetfn replay`. */
export interface ReplayCommandOptions {
  since: string;
  until?: string;
  to?: string;
  json?: boolean;
}

/** `jetfn replay <fn> --since 1h [--until <time|duration>] [--to <url>]`: re-runs stored jobs as new ones. */
export async function replayCommand(fn: string, options: ReplayCommandOptions): Promise<void> {
  const now = Date.now();
  const sinceMs = now - durationOption("--since", options.since);
  const untilMs = options.until === undefined ? now : pointInTime(options.until, now);
  const config = resolveConfig();
  const source = await createClient();
  try {
    const target = options.to === undefined ? source : await createClient({ natsUrl: options.to });
    try {
      const jobs = await replayJobs({
        source: source.connection,
        target: target.connection,
        stream: config.streamName,
        fn,
        sinceMs,
        untilMs,
      });
      const where = options.to ?? config.natsUrl;
      if (options.json) {
        printJson({ function: fn, replayed: jobs.length, since: iso(sinceMs), until: iso(untilMs), to: where, jobs });
      } else {
        const prioritised = jobs.filter((job) => job.priority > 0).length;
        const levels = prioritised > 0 ? `, ${prioritised} with a priority (kept)` : "";
        process.stdout.write(
          `replayed ${jobs.length} job(s) of ${fn}${levels} stored ${iso(sinceMs)} to ${iso(untilMs)} into ${where}\n`,
        );
      }
    } finally {
      if (target !== source) await target.close();
    }
  } finally {
    await source.close();
  }
}

function durationOption(name: string, value: string): number {
  try {
    return parseDuration(value);
  } catch (error) {
    throw new JetfnError("E_INPUT_INVALID", `${name}: ${(error as Error).message}`);
  }
}

/** A duration ago (`30m`) or a time (`2025-01-31T12:00:00Z`). */
function pointInTime(value: string, now: number): number {
  if (/^\d+(\.\d+)?\s*(ms|s|m|h|d)$/.test(value.trim())) return now - durationOption("--until", value);
  const time = Date.parse(value);
  if (Number.isNaN(time)) {
    throw new JetfnError(
      "E_INPUT_INVALID",
      `--until "${value}" is neither a duration (30m) nor a time (2025-01-31T12:00:00Z)`,
    );
  }
  return time;
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}
