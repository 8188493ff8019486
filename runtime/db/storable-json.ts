// Postgres jsonb refuses \u0000 and unpaired surrogates, which JSON (and so callers) allow.
// JSON.stringify writes paired surrogates as raw characters and escapes only lone ones, so every
// surrogate escape in its output is lone. An escape counts only after an even run of backslashes.
const UNSTORABLE_ESCAPE = /(?<!\\)((?:\\\\)*)\\u(0000|d[89a-f][0-9a-f]{2})/gi;

/**
 * Serialises `value` as JSON that Postgres jsonb accepts: characters it cannot hold become U+FFFD,
 * and what JSON has no text for (a function, a symbol) becomes `null`, as a missing value does.
 */
export function storableJson(value: unknown): string {
  const json = JSON.stringify(value ?? null) ?? "null";
  return json.includes("\\u") ? json.replace(UNSTORABLE_ESCAPE, "$1\\ufffd") : json;
}
