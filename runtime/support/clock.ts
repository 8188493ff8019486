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

let givenMs = Number.NaN;
let givenFormatted = "";

/**
 * `ms` (since the epoch) as ISO 8601, like `new Date(ms).toISOString()`, formatted again only when
 * it differs from the previous call's: jobs pulled together were mostly stored in the same
 * millisecond (their enqueue time is read once per job).
 */
export function isoAt(ms: number): string {
  if (ms !== givenMs) {
    givenMs = ms;
    givenFormatted = new Date(ms).toISOString();
  }
  return givenFormatted;
}
