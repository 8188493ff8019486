import type { Sql } from "postgres";

/**
 * Which statements run as prepared statements. postgres.js sends a parameterized statement that
 * is not prepared in two round trips (it asks Postgres for the parameter types first) and stops
 * pipelining behind it; a prepared one is described once per connection and then travels in one.
 * drizzle asks for unprepared statements unless a query is named, so the invocation transaction
 * decides here instead: the first MAX_PREPARED distinct statement texts of a pool are prepared,
 * later new ones are not, so SQL built with inlined values cannot grow the caches without bound
 * (on the server, each connection keeps what it prepared until it closes).
 */
export const MAX_PREPARED = 1_000;

const chosen = new WeakMap<Sql, Set<string>>();

/** Whether `text`, with parameters, should run prepared on `pool`'s connections. */
export function shouldPrepare(pool: Sql, text: string): boolean {
  let texts = chosen.get(pool);
  if (!texts) {
    texts = new Set();
    chosen.set(pool, texts);
  }
  if (texts.has(text)) return true;
  if (texts.size >= MAX_PREPARED) return false;
  texts.add(text);
  return true;
}

/** Options for one of jetfn's own statements: fixed texts, always prepared. */
export const PREPARED = { prepare: true } as const;
