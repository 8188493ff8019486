import type { JetStreamManager } from "@nats-io/jetstream";
import { sql } from "drizzle-orm";
import { parseTime } from "../inspect/time-input";
import { delayedStreamName, type ScheduledJob } from "../nats/delayed-jobs";
import { listScheduledJobs } from "../nats/scheduled-job-list";
import type { Runtime } from "../runtime";
import { JetfnError } from "../support/errors";
import {
  INVOCATION_STATUSES,
  INVOCATIONS_PAGE_SIZE,
  type InvocationFilters,
  type InvocationPage,
  type InvocationRow,
} from "./views/invocations";

// Delayed jobs read from the stream for one page: the list of those is not paged further.
const SCHEDULED_LIMIT = 1_000;

/** The invocation list's filters from the query string, each checked. */
export function invocationFilters(url: URL): InvocationFilters {
  const status = param(url, "status");
  if (status !== undefined && !INVOCATION_STATUSES.includes(status)) {
    throw new JetfnError("E_INPUT_INVALID", `status "${status}" is none of ${INVOCATION_STATUSES.join(", ")}`);
  }
  const offsetText = param(url, "offset") ?? "0";
  const offset = Number(offsetText);
  if (!Number.isSafeInteger(offset) || offset < 0) {
    throw new JetfnError("E_INPUT_INVALID", `offset "${offsetText}" is not a whole number of rows`);
  }
  const since = param(url, "since");
  // Checked here so a bad time is answered as bad input before any query runs.
  if (since !== undefined) parseTime(since);
  return { function: param(url, "function"), status, since, id: param(url, "id"), offset };
}

/** The filters as typed, unchecked: to show them again beside the reason one was refused. */
export function typedFilters(url: URL): InvocationFilters {
  return {
    function: param(url, "function"),
    status: param(url, "status"),
    since: param(url, "since"),
    id: param(url, "id"),
  };
}

/**
 * One page of invocations, newest change first. Delayed jobs waiting for their due time have no
 * record yet: they are listed from the delayed-jobs stream under status `scheduled`.
 */
export async function listInvocations(
  runtime: Runtime,
  manager: JetStreamManager,
  filters: InvocationFilters,
): Promise<InvocationPage> {
  const stream = delayedStreamName(runtime.config.streamName);
  if (filters.status === "scheduled") return scheduledPage(manager, stream, filters);
  const page = await recordPage(runtime, filters);
  const scheduled = await listScheduledJobs(manager, stream, 0).catch(() => undefined);
  return { ...page, scheduled: scheduled?.count ?? 0 };
}

async function recordPage(runtime: Runtime, filters: InvocationFilters): Promise<InvocationPage> {
  const since = filters.since ? parseTime(filters.since) : new Date(Date.now() - 24 * 3_600_000);
  const offset = filters.offset ?? 0;
  const rows = (await runtime.database.db.execute(sql`
    select id, function, status, attempts, to_char(enqueued_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') as enqueued_at,
           to_char(finished_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') as finished_at,
           (extract(epoch from finished_at - started_at) * 1000)::int as duration_ms, error->>'message' as last_error
    from jetfn.invocations
    where updated_at >= ${since.toISOString()}
      ${filters.function ? sql`and function = ${filters.function}` : sql``}
      ${filters.status ? sql`and status = ${filters.status}` : sql``}
      ${filters.id ? sql`and starts_with(id, ${filters.id})` : sql``}
    order by updated_at desc, id
    limit ${INVOCATIONS_PAGE_SIZE + 1} offset ${offset}`)) as unknown as Record<string, unknown>[];
  return { rows: rows.slice(0, INVOCATIONS_PAGE_SIZE).map(recordRow), more: rows.length > INVOCATIONS_PAGE_SIZE };
}

async function scheduledPage(
  manager: JetStreamManager,
  stream: string,
  filters: InvocationFilters,
): Promise<InvocationPage> {
  const { jobs } = await listScheduledJobs(manager, stream, SCHEDULED_LIMIT).catch(() => ({ jobs: [] }));
  const since = filters.since ? parseTime(filters.since).toISOString() : "";
  const matching = jobs.filter(
    (job) =>
      (!filters.function || job.fn === filters.function) &&
      (!filters.id || job.id.startsWith(filters.id)) &&
      job.enqueuedAt >= since,
  );
  const offset = filters.offset ?? 0;
  return {
    rows: matching.slice(offset, offset + INVOCATIONS_PAGE_SIZE).map(scheduledRow),
    more: matching.length > offset + INVOCATIONS_PAGE_SIZE,
  };
}

function recordRow(row: Record<string, unknown>): InvocationRow {
  return {
    id: row.id as string,
    function: row.function as string,
    status: row.status as string,
    attempts: row.attempts as number,
    enqueuedAt: row.enqueued_at as string | null,
    finishedAt: row.finished_at as string | null,
    durationMs: row.duration_ms as number | null,
    lastError: row.last_error as string | null,
  };
}

function scheduledRow(job: ScheduledJob): InvocationRow {
  return {
    id: job.id,
    function: job.fn,
    status: "scheduled",
    attempts: 0,
    enqueuedAt: job.enqueuedAt,
    finishedAt: null,
    durationMs: null,
    lastError: null,
    runAt: job.runAt,
  };
}

function param(url: URL, name: string): string | undefined {
  const value = url.searchParams.get(name)?.trim();
  return value ? value : undefined;
}
