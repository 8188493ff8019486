/** A duration written for people: `"250ms"`, `"30s"`, `"5m"`, `"1h"`, `"7d"`, or milliseconds as a number. */
export type Duration = string | number;

const UNIT_MS: Record<string, number> = {
  ms: 1,
  s: 1_000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
};

const DURATION_PATTERN = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)$/;

/**
 * Converts a readable duration to milliseconds, or throws a `TypeError` naming what was wrong.
 * @example parseDuration("1m") // 60000
 */
export function parseDuration(value: Duration): number {
  if (typeof value === "number") {
    if (!Number.isFinite(value) || value < 0) {
      throw new TypeError(`duration ${value} must be a finite number of milliseconds >= 0`);
    }
    return value;
  }
  const match = DURATION_PATTERN.exec(value.trim());
  if (!match) {
    throw new TypeError(`"${value}" is not a duration; write it like "500ms", "30s", "5m", "1h" or "7d"`);
  }
  return Math.round(Number(match[1]) * (UNIT_MS[match[2] as string] as number));
}

/** How long from `start` to `end` (ISO 8601 times), formatted; undefined when either is unknown. */
export function formatElapsed(start: string | null | undefined, end: string | null | undefined): string | undefined {
  return start && end ? formatDuration(Date.parse(end) - Date.parse(start)) : undefined;
}

/** Formats milliseconds back into the shortest readable duration (`90000` -> `"1m30s"`). */
export function formatDuration(ms: number): string {
  if (ms < 1_000) return `${Math.round(ms)}ms`;
  if (ms < 60_000) return `${(ms / 1_000).toFixed(ms < 10_000 ? 1 : 0)}s`;
  const parts: string[] = [];
  let rest = Math.round(ms / 1_000);
  for (const [unit, size] of [
    ["d", 86_400],
    ["h", 3_600],
    ["m", 60],
    ["s", 1],
  ] as const) {
    if (rest >= size) {
      parts.push(`${Math.floor(rest / size)}${unit}`);
      rest %= size;
    }
  }
  return parts.slice(0, 2).join("");
}

/** Milliseconds to the nanoseconds JetStream expects. */
export function toNanos(ms: number): number {
  return Math.round(ms * 1_000_000);
}
