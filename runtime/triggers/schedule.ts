import { Cron } from "croner";
import { type Duration, formatDuration, parseDuration } from "../support/duration";

/** A cron schedule: five fields (minute hour day-of-month month day-of-week), optionally in a time zone. */
export type ScheduleOption = string | { cron: string; timezone?: string };

/**
 * What a runtime does with due times that passed while no runtime ran:
 * `latest` runs the most recent one, `all` runs each (up to MAX_CATCH_UP), `none` skips them.
 */
export type CatchUpPolicy = "latest" | "all" | "none";

/** The schedule options of a function, as written in `defineFunction`. */
export interface ScheduleOptions {
  schedule?: ScheduleOption;
  every?: Duration;
  catchUp?: CatchUpPolicy;
}

/** A checked schedule: when it is due, and what to do about missed due times. */
export interface ResolvedSchedule {
  /** Readable form for logs and `jetfn ls`: `cron 30 8 * * * (Europe/Paris)` or `every 5m`. */
  readonly description: string;
  readonly catchUp: CatchUpPolicy;
  /** The first due time strictly after `time` (ms since epoch), or undefined if there is none. */
  nextAfter(time: number): number | undefined;
}

export const DEFAULT_CATCH_UP: CatchUpPolicy = "latest";
/** Most missed due times `catchUp: "all"` runs after a downtime; older ones are skipped (and logged). */
export const MAX_CATCH_UP = 1_000;
/** Missed due times older than this are not looked at (a week: the default job retention). */
export const CATCH_UP_HORIZON_MS = 7 * 24 * 3_600_000;
const MIN_EVERY_MS = 1_000;
const CATCH_UP_POLICIES = new Set<string>(["latest", "all", "none"]);

/**
 * Checks `schedule` / `every` / `catchUp`; returns undefined when the function has no schedule.
 * Throws an Error whose message names the option and why.
 */
export function resolveSchedule(options: ScheduleOptions): ResolvedSchedule | undefined {
  const { schedule, every, catchUp } = options;
  if (schedule !== undefined && every !== undefined) throw new Error("options schedule and every cannot be combined");
  if (catchUp !== undefined && !CATCH_UP_POLICIES.has(catchUp)) {
    throw new Error(`option catchUp must be "latest", "all" or "none", got ${JSON.stringify(catchUp)}`);
  }
  const policy = catchUp ?? DEFAULT_CATCH_UP;
  if (every !== undefined) return everySchedule(every, policy);
  if (schedule !== undefined) return cronSchedule(schedule, policy);
  if (catchUp !== undefined) throw new Error("option catchUp needs a schedule or every");
  return undefined;
}

/**
 * Due times in (after, until], oldest first, at most `limit` of them (the most recent), never
 * older than CATCH_UP_HORIZON_MS before `until`.
 */
export function dueTimesBetween(schedule: ResolvedSchedule, after: number, until: number, limit: number): number[] {
  const due: number[] = [];
  let cursor = Math.max(after, until - CATCH_UP_HORIZON_MS);
  for (;;) {
    const next = schedule.nextAfter(cursor);
    if (next === undefined || next > until) return due;
    due.push(next);
    if (due.length > limit) due.shift();
    cursor = next;
  }
}

function everySchedule(every: Duration, catchUp: CatchUpPolicy): ResolvedSchedule {
  let intervalMs: number;
  try {
    intervalMs = parseDuration(every);
  } catch (error) {
    throw new Error(`option every: ${(error as Error).message}`);
  }
  if (intervalMs < MIN_EVERY_MS) throw new Error(`option every must be at least 1s, got ${JSON.stringify(every)}`);
  return Object.freeze({
    description: `every ${typeof every === "string" ? every.trim() : formatDuration(intervalMs)}`,
    catchUp,
    // Anchored at the epoch, so every runtime computes the same due times.
    nextAfter: (time: number) => (Math.floor(time / intervalMs) + 1) * intervalMs,
  });
}

function cronSchedule(schedule: ScheduleOption, catchUp: CatchUpPolicy): ResolvedSchedule {
  const { cron: pattern, timezone } = typeof schedule === "string" ? { cron: schedule, timezone: undefined } : schedule;
  if (typeof pattern !== "string") throw new Error("option schedule must be a cron string or { cron, timezone }");
  if (timezone !== undefined && !isTimeZone(timezone)) {
    throw new Error(
      `option schedule: unknown time zone ${JSON.stringify(timezone)} (use an IANA name like "Europe/Paris")`,
    );
  }
  const fields = pattern.trim().split(/\s+/);
  if (fields.length !== 5 && !pattern.trim().startsWith("@")) {
    throw new Error(
      `option schedule must be a cron expression with 5 fields (minute hour day month weekday), got ${JSON.stringify(pattern)}`,
    );
  }
  let cron: Cron;
  try {
    cron = new Cron(pattern.trim(), { timezone, paused: true });
  } catch (error) {
    throw new Error(`option schedule: ${(error as Error).message}`);
  }
  return Object.freeze({
    description: `cron ${pattern.trim()}${timezone ? ` (${timezone})` : ""}`,
    catchUp,
    nextAfter: (time: number) => cron.nextRun(new Date(time))?.getTime(),
  });
}

function isTimeZone(name: string): boolean {
  try {
    new Intl.DateTimeFormat("en", { timeZone: name });
    return true;
  } catch {
    return false;
  }
}
