let formattedMs = Number.NaN;
let formatted = "";

/**
 * The current time as ISO 8601, like `new Date().toISOString()`, formatted at most once per
 * millisecond: jobs finishing in the same millisecond share the string, and formatting a date per
 * timestamp was a visible part of a no-op job's cost at thousands of jobs a second.
 */
export function isoNow(): string {
  const now = Date.now();
  if (now !== formattedMs) {
    formattedMs = now;
    formatted = new Date(now).toISOString();
  }
  return formatted;
}
