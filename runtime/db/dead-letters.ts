import type { Sql } from "postgres";
import { JetfnError } from "../support/errors";
import type { StoredError } from "./invocation-store";
import type { FinalStatement } from "./invocation-transaction";

/** A dead job as `jetfn dlq` lists it. */
export interface DeadLetter {
  id: string;
  function: string;
  attempts: number;
  /** The last attempt's error. */
  error: StoredError | null;
  /** When it died (ISO 8601). */
  diedAt: string | null;
  enqueuedAt: string | null;
  /** The dead job this one was itself a retry of. */
  retryOf: string | null;
}

/** Options of listing dead letters. */
export interface ListDeadLettersOptions {
  /** Only this function's dead jobs. @default every function */
  fn?: string;
  /** At most this many, newest first. @default DEFAULT_DEAD_LETTER_LIMIT */
  limit?: number;
}

/** What a retry claimed: the dead job's function and input, to publish again. */
export interface ClaimedDeadLetter {
  id: string;
  function: string;
  input: unknown;
}

/** A dead job that recorded durable steps: `jetfn retry` reopens it under its id (see reopenStatement). */
export interface ResumableDeadLetter {
  id: string;
  function: string;
  /** Its record's token when read. */
  resume: string | null;
  /** The seq of its last step. */
  lastSeq: number;
  priority: number | undefined;
}

export const DEFAULT_DEAD_LETTER_LIMIT = 100;

/** Dead jobs not yet retried, newest first. */
export async function listDeadLetters(sql: Sql, options: ListDeadLettersOptions = {}): Promise<DeadLetter[]> {
  const limit = options.limit ?? DEFAULT_DEAD_LETTER_LIMIT;
  const rows = await sql<DeadLetterRow[]>`
    select id, function, attempts, error, ${iso(sql, "finished_at")}, ${iso(sql, "enqueued_at")}, retry_of
    from jetfn.invocations
    where status = 'dead' and retried_as is null
      ${options.fn === undefined ? sql`` : sql`and function = ${options.fn}`}
    order by finished_at desc nulls last, id
    limit ${limit}`;
  return rows.map((row) => ({
    id: row.id,
    function: row.function,
    attempts: row.attempts,
    error: row.error,
    diedAt: row.finished_at,
    enqueuedAt: row.enqueued_at,
    retryOf: row.retry_of,
  }));
}

/** Ids of a function's dead jobs not yet retried, oldest first (the order `retry --all` replays them in). */
export async function deadLetterIds(sql: Sql, fn: string): Promise<string[]> {
  const rows = await sql<{ id: string }[]>`
    select id from jetfn.invocations
    where status = 'dead' and retried_as is null and function = ${fn}
    order by finished_at nulls first, id`;
  return rows.map((row) => row.id);
}

/**
 * Marks a dead job as retried by `newId` and returns what to publish. Only one retry of a job can
 * claim it; anything else is refused with E_NOT_FOUND or E_NOT_DEAD saying why.
 */
export async function claimDeadLetter(sql: Sql, id: string, newId: string): Promise<ClaimedDeadLetter> {
  const [row] = await sql<{ id: string; function: string; input: unknown }[]>`
    update jetfn.invocations
    set retried_as = ${newId}, retried_at = clock_timestamp(), updated_at = clock_timestamp()
    where id = ${id} and status = 'dead' and retried_as is null
    returning id, function, input`;
  if (row) return row;
  throw await refusal(sql, id, "retried");
}

/** The dead job `id` if it recorded steps (a retry resumes it from them), else undefined. */
export async function resumableDeadLetter(sql: Sql, id: string): Promise<ResumableDeadLetter | undefined> {
  const [row] = await sql<
    { function: string; resume: string | null; priority: number | null; last_seq: number | null }[]
  >`
    select i.function, i.resume, i.priority, (select max(s.seq) from jetfn.steps s where s.invocation_id = i.id) as last_seq
    from jetfn.invocations i where i.id = ${id} and i.status = 'dead' and i.retried_as is null`;
  if (!row || row.last_seq === null) return undefined;
  return { id, function: row.function, resume: row.resume, lastSeq: row.last_seq, priority: row.priority ?? undefined };
}

/** Postgres error code of jetfn.reopen_invocation for a job no longer dead (another retry reopened it). */
export const NOT_REOPENED_CODE = "JF007";

/**
 * The statement that reopens a dead job with steps for the run of `token` (migration 0036), to be
 * sent with that run's resumption as an outbox row.
 */
export function reopenStatement(dead: ResumableDeadLetter, token: string): FinalStatement {
  return { text: "select jetfn.reopen_invocation($1, $2, $3)", params: [dead.id, dead.resume, token] };
}

/** Undoes a claim whose new job could not be published, so the dead job can be retried later. */
export async function releaseDeadLetter(sql: Sql, id: string, newId: string): Promise<void> {
  await sql`
    update jetfn.invocations
    set retried_as = null, retried_at = null, updated_at = clock_timestamp()
    where id = ${id} and retried_as = ${newId}`;
}

/** Discards a dead job: status `dropped`, with when. Refuses jobs that are not dead. */
export async function dropDeadLetter(sql: Sql, id: string): Promise<{ id: string; droppedAt: string }> {
  const [row] = await sql<{ id: string; dropped_at: string }[]>`
    update jetfn.invocations
    set status = 'dropped', dropped_at = clock_timestamp(), updated_at = clock_timestamp()
    where id = ${id} and status = 'dead' and retried_as is null
    returning id, ${iso(sql, "dropped_at")}`;
  if (row) return { id: row.id, droppedAt: row.dropped_at };
  throw await refusal(sql, id, "dropped");
}

/** Explains why a job cannot be retried or dropped. */
export async function refusal(sql: Sql, id: string, verb: "retried" | "dropped"): Promise<JetfnError> {
  const [row] = await sql<{ status: string; retried_as: string | null; dropped_at: string | null }[]>`
    select status, retried_as, ${iso(sql, "dropped_at")} from jetfn.invocations where id = ${id}`;
  if (!row) return new JetfnError("E_NOT_FOUND", `no job with id ${id} is recorded; \`jetfn dlq\` lists dead jobs`);
  if (row.retried_as) {
    return new JetfnError("E_NOT_DEAD", `job ${id} was already retried as ${row.retried_as}; it cannot be ${verb}`);
  }
  if (row.status === "dropped") {
    return new JetfnError(
      "E_NOT_DEAD",
      `job ${id} was dropped at ${row.dropped_at ?? "an unknown time"}; it cannot be ${verb}`,
    );
  }
  return new JetfnError("E_NOT_DEAD", `job ${id} is ${row.status}, not dead; only dead jobs can be ${verb}`);
}

interface DeadLetterRow {
  id: string;
  function: string;
  attempts: number;
  error: StoredError | null;
  finished_at: string | null;
  enqueued_at: string | null;
  retry_of: string | null;
}

/**
 * A timestamp column as ISO 8601 text in UTC with milliseconds, the shape `toISOString()` gives
 * (and `status` prints), whatever type parsers the pool has installed.
 */
function iso(sql: Sql, column: string) {
  return sql.unsafe(`to_char(${column} at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') as ${column}`);
}
