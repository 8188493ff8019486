import type { Sql } from "postgres";
import { setLimits } from "./series-query";

/** An invocation as the function page lists it. */
export interface RecentInvocation {
  id: string;
  status: string;
  attempts: number;
  updatedAt: string;
  durationMs: number | null;
  lastError: string | null;
}

/** Failed attempts that said the same thing: how many, when last, and one of them to open. */
export interface ErrorGroup {
  code: string;
  message: string;
  count: number;
  lastAt: string;
  /** The invocation of the latest such attempt. */
  exampleId: string;
}

/** What the function page reads from the records: its latest invocations and its errors, grouped. */
export interface FunctionActivity {
  recent: RecentInvocation[];
  errors: ErrorGroup[];
}

/** How far back the function page looks, and how much it shows. */
const ACTIVITY_WINDOW_MS = 24 * 3_600_000;
const RECENT_LIMIT = 20;
const ERROR_GROUP_LIMIT = 10;
// A message is grouped on its first characters: ids or values at the end would split a group.
const MESSAGE_KEY_CHARS = 160;

/**
 * Reads a function's last 24 hours from `jetfn.invocations` (every runtime's jobs): its latest
 * invocations and its failed attempts grouped by code and message. Bounded like the charts: only
 * rows written in the window (updated_at BRIN index), a row limit, and a statement timeout.
 */
export async function readFunctionActivity(sql: Sql, fn: string, now = Date.now()): Promise<FunctionActivity> {
  const since = new Date(now - ACTIVITY_WINDOW_MS).toISOString();
  return sql.begin(async (transaction) => {
    await setLimits(transaction);
    const recent = await transaction<RecentRow[]>`
      select id, status, attempts, to_char(updated_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') as updated_at,
             (extract(epoch from finished_at - started_at) * 1000)::int as duration_ms, error->>'message' as last_error
      from jetfn.invocations where updated_at >= ${since} and function = ${fn}
      order by updated_at desc, id limit ${RECENT_LIMIT}`;
    const errors = await transaction<ErrorRow[]>`
      select failure.value->>'code' as code, left(failure.value->>'message', ${MESSAGE_KEY_CHARS}) as message,
             count(*)::int as count,
             to_char(max((failure.value->>'at')::timestamptz) at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') as last_at,
             (array_agg(id order by (failure.value->>'at')::timestamptz desc))[1] as example_id
      from jetfn.invocations cross join lateral jsonb_array_elements(errors) as failure
      where updated_at >= ${since} and function = ${fn} and errors <> '[]'::jsonb
        and failure.value->>'code' is distinct from 'E_CANCELLED' and (failure.value->>'at')::timestamptz >= ${since}
      group by 1, 2 order by count(*) desc, max((failure.value->>'at')::timestamptz) desc limit ${ERROR_GROUP_LIMIT}`;
    return { recent: recent.map(recentInvocation), errors: errors.map(errorGroup) };
  });
}

interface RecentRow {
  id: string;
  status: string;
  attempts: number;
  updated_at: string;
  duration_ms: number | null;
  last_error: string | null;
}

interface ErrorRow {
  code: string | null;
  message: string | null;
  count: number;
  last_at: string;
  example_id: string;
}

function recentInvocation(row: RecentRow): RecentInvocation {
  return {
    id: row.id,
    status: row.status,
    attempts: row.attempts,
    updatedAt: row.updated_at,
    durationMs: row.duration_ms,
    lastError: row.last_error,
  };
}

function errorGroup(row: ErrorRow): ErrorGroup {
  return {
    code: row.code ?? "?",
    message: row.message ?? "",
    count: row.count,
    lastAt: row.last_at,
    exampleId: row.example_id,
  };
}
