import { eq } from "drizzle-orm";
import type { Sql } from "postgres";
import { type InvocationStatus, invocations } from "../../schema/jetfn";
import { isoNow } from "../support/clock";
import { JetfnError } from "../support/errors";
import type { DatabaseClient } from "./client";
import type { FinalStatement } from "./invocation-transaction";
import { PREPARED } from "./prepared-statements";
import { storableJson } from "./storable-json";

/**
 * What a job was enqueued with, kept on its record for `status`: its priority (1-3; absent for the
 * default, 0) and its debounce or singleton key. Read from its message by flow/flow-labels.ts.
 */
export interface JobLabels {
  priority?: number;
  debounceKey?: string;
  singletonKey?: string;
}

/** What every job record carries. */
export interface JobRecord {
  id: string;
  fn: string;
  attempt: number;
  input: unknown;
  /** When the job was stored in JetStream (ISO 8601). */
  enqueuedAt: string;
  /** When this attempt started (ISO 8601). */
  startedAt: string;
  streamSeq: number;
  retryOf: string | undefined;
  /** Its priority and keys, when it has any (most jobs have none). */
  labels?: JobLabels;
  /** For a run started by a resumption (after a durable sleep): its token. */
  resume?: string;
}

/** One attempt's error as kept in `jetfn.invocations.errors`. */
export interface StoredError {
  attempt: number;
  code: string;
  name: string;
  message: string;
  stack?: string;
  issues?: unknown[];
  at: string;
  /** The key of the durable step whose attempt failed (then `attempt` is the step's). */
  step?: string;
}

/** An invocation as `status` shows it. */
export interface InvocationRecord {
  id: string;
  function: string;
  status: InvocationStatus;
  attempts: number;
  input: unknown;
  result: unknown;
  error: StoredError | null;
  errors: StoredError[];
  progress: unknown;
  enqueuedAt: string | null;
  startedAt: string | null;
  finishedAt: string | null;
  updatedAt: string;
  retryOf: string | null;
  /** The job that replaced this dead one (`jetfn retry`), and when. */
  retriedAs: string | null;
  retriedAt: string | null;
  /** When this dead job was dropped (`jetfn dlq drop`). */
  droppedAt: string | null;
  /** When a sleeping job is due. */
  wakeAt: string | null;
  /** When a `failed` job runs its failed durable step again (null: JetStream redelivers it after its backoff). */
  retryAt: string | null;
  /** The token of the run that may go on with the job, once it has slept (null before). */
  resume: string | null;
  /** What it was enqueued with (absent: the default priority, no key). */
  labels: JobLabels;
}

/** Attempts' errors kept per job; older ones are dropped so a job retried forever stays small. */
export const ERROR_HISTORY_LIMIT = 20;

/** Records the successful attempts of a group commit's members, all in one call (fenced). */
const GROUP_COMPLETION_SQL = "select jetfn.complete_invocations($1::jsonb)";

/**
 * The statement, run just before COMMIT, that records a successful attempt (fenced), with its
 * result as JSON already made storable (see storableJson).
 */
export function completionStatement(record: JobRecord, resultJson: string): FinalStatement {
  let params: unknown[] | undefined;
  // A run started by a resumption (after a durable sleep) names its token: only the record's may end the job.
  const resumed = record.resume !== undefined;
  const labelled = resumed || hasLabels(record.labels);
  return {
    grouped: { text: GROUP_COMPLETION_SQL, row: successRow(record, resultJson) },
    // A job without labels (most) sends the statement as it always was.
    text: resumed
      ? "select jetfn.complete_invocation($1, $2, $3, $4::jsonb, $5::jsonb, $6, $7, $8, $9, $10::smallint, $11, $12, $13)"
      : labelled
        ? "select jetfn.complete_invocation($1, $2, $3, $4::jsonb, $5::jsonb, $6, $7, $8, $9, $10::smallint, $11, $12)"
        : "select jetfn.complete_invocation($1, $2, $3, $4::jsonb, $5::jsonb, $6, $7, $8, $9)",
    // Serialised only if asked for: a job whose record goes with its group's sends `grouped.row`.
    get params() {
      params ??= [
        record.id,
        record.fn,
        record.attempt,
        storableJson(record.input),
        resultJson,
        record.enqueuedAt,
        record.startedAt,
        record.streamSeq,
        record.retryOf ?? null,
        ...(labelled ? labelParams(record.labels) : []),
        ...(resumed ? [record.resume] : []),
      ];
      return params;
    },
    inlinable: true,
  };
}

function hasLabels(labels: JobLabels | undefined): labels is JobLabels {
  return (
    labels !== undefined &&
    (labels.priority !== undefined || labels.debounceKey !== undefined || labels.singletonKey !== undefined)
  );
}

/** The priority, debounce key and singleton key as statement parameters (null when absent). */
function labelParams(labels: JobLabels | undefined): unknown[] {
  return [labels?.priority ?? null, labels?.debounceKey ?? null, labels?.singletonKey ?? null];
}

/** Postgres error code raised when another attempt already finished the job. */
export const FENCED_OUT_CODE = "JF001";
/** Postgres error code raised when the job's id is already recorded for another function. */
export const ID_CONFLICT_CODE = "JF002";

const FAILURE_SQL = `
insert into jetfn.invocations as i
  (id, function, status, attempts, input, error, errors, enqueued_at, started_at, finished_at, updated_at, stream_seq,
   retry_of, priority, debounce_key, singleton_key)
values
  ($1, $2, $3, $4, $5::jsonb, $6::jsonb, jsonb_build_array($6::jsonb), $7, $8,
   case when $3 in ('dead', 'cancelled') then clock_timestamp() end, clock_timestamp(), $9, $10, $11, $12, $13)
on conflict (id) do update set
  status = excluded.status, attempts = greatest(i.attempts, excluded.attempts), error = excluded.error,
  errors = jetfn.append_bounded(i.errors, excluded.error, ${ERROR_HISTORY_LIMIT}),
  started_at = excluded.started_at, finished_at = excluded.finished_at, updated_at = excluded.updated_at,
  -- A step's retry time no longer holds: JetStream's redelivery tries the job again.
  progress = null, wake_at = null, priority = coalesce(excluded.priority, i.priority),
  debounce_key = coalesce(excluded.debounce_key, i.debounce_key),
  singleton_key = coalesce(excluded.singleton_key, i.singleton_key)
where not jetfn.is_final(i.status) and i.function = excluded.function
  -- Only a run of the record's token (null: of the job's own message, until it first slept) fails
  -- it: another is a stale copy. A cancel ends it whoever asks.
  and (i.resume is not distinct from $14 or excluded.status = 'cancelled')
returning id`;

/**
 * Records a failed attempt (`failed`: a retry follows) or a dead job. Returns false when the job
 * had already finished, which means another attempt won and this one's failure does not count, or
 * when the id belongs to another function (see `idOwner`); that function's record is left alone.
 */
export async function recordFailure(
  sql: Sql,
  record: JobRecord,
  status: "failed" | "dead" | "cancelled",
  error: StoredError,
): Promise<boolean> {
  const rows = await sql.unsafe(
    FAILURE_SQL,
    [
      record.id,
      record.fn,
      status,
      record.attempt,
      storableJson(record.input),
      storableJson(error),
      record.enqueuedAt,
      record.startedAt,
      record.streamSeq,
      record.retryOf ?? null,
      ...labelParams(record.labels),
      record.resume ?? null,
    ] as never[],
    PREPARED,
  );
  return rows.length > 0;
}

/** Records a batch of successes (jetfn.record_successes, which the group completion uses too). */
const SUCCESS_BATCH_SQL = "select jetfn.record_successes($1::jsonb) as id";

/** A successful attempt as one JSON row of SUCCESS_BATCH_SQL or jetfn.complete_invocations(). */
function successRow(record: JobRecord, resultJson: string): string {
  const row = storableJson({
    id: record.id,
    function: record.fn,
    attempts: record.attempt,
    input: record.input,
    enqueued_at: record.enqueuedAt,
    started_at: record.startedAt,
    finished_at: isoNow(),
    stream_seq: record.streamSeq,
    retry_of: record.retryOf ?? null,
    // Absent (read as null) for a job without them.
    priority: record.labels?.priority,
    debounce_key: record.labels?.debounceKey,
    singleton_key: record.labels?.singletonKey,
    resume: record.resume,
  });
  // The result was serialised once, when the invocation ended; spliced in, not serialised again.
  return `${row.slice(0, -1)},"result":${resultJson}}`;
}

/** Records successes of jobs that never touched the database, many per statement. */
export interface SuccessRecorder {
  /**
   * Resolves once the record is committed; false if another attempt had finished the job first.
   * `settled` runs synchronously for every job of a batch as soon as it is written, so whatever
   * it sends (acks, notices) leaves in one socket write instead of one per job.
   */
  record(record: JobRecord, resultJson: string, settled?: (applied: boolean) => void): Promise<boolean>;
  /** Waits for every queued record to be written. */
  flush(): Promise<void>;
}

interface PendingSuccess {
  json: string;
  id: string;
  fn: string;
  /** The run's token, for a run started by a resumption. */
  resume: string | undefined;
  settled: ((applied: boolean) => void) | undefined;
  resolve: (applied: boolean) => void;
  reject: (error: unknown) => void;
}

/** Writes queued successes in batches: while one batch is in flight the next one fills up. */
export function createSuccessRecorder(sql: Sql, maxBatch = 1_000): SuccessRecorder {
  let pending: PendingSuccess[] = [];
  let inFlight: Promise<void> | undefined;

  const writeBatch = async (batch: PendingSuccess[]): Promise<void> => {
    // The same job twice in one statement would make ON CONFLICT fail; one write covers both. A run
    // with a token (a sleeping job's resumption) comes first: only the record's token may end the
    // job, and once a job slept, a run without one is a stale copy of its message.
    const unique = new Map<string, PendingSuccess>();
    for (const entry of batch) {
      const kept = unique.get(entry.id);
      if (!kept || (kept.resume === undefined && entry.resume !== undefined)) unique.set(entry.id, entry);
    }
    try {
      const rows = await sql.unsafe(
        SUCCESS_BATCH_SQL,
        [`[${[...unique.values()].map((e) => e.json).join(",")}]`],
        PREPARED,
      );
      const applied = new Set(rows.map((row) => row.id as string));
      const owners = await ownersOf(
        sql,
        [...unique.keys()].filter((id) => !applied.has(id)),
      );
      for (const entry of batch) {
        const owner = owners.get(entry.id);
        if (owner !== undefined && owner !== entry.fn) {
          entry.reject(idConflictError(entry.id, entry.fn, owner));
          continue;
        }
        const won = applied.has(entry.id) && unique.get(entry.id) === entry;
        entry.settled?.(won);
        entry.resolve(won);
      }
    } catch (error) {
      for (const entry of batch) entry.reject(error);
    }
  };

  const drain = async (): Promise<void> => {
    while (pending.length > 0) {
      const batch = pending.slice(0, maxBatch);
      pending = pending.slice(batch.length);
      await writeBatch(batch);
    }
    inFlight = undefined;
  };

  return {
    record(record, resultJson, settled) {
      return new Promise<boolean>((resolve, reject) => {
        pending.push({
          json: successRow(record, resultJson),
          id: record.id,
          fn: record.fn,
          resume: record.resume,
          settled,
          resolve,
          reject,
        });
        // Wait one turn of the event loop so jobs finishing together share a statement.
        inFlight ??= new Promise<void>((start) => setImmediate(start)).then(drain);
      });
    },
    async flush() {
      while (inFlight !== undefined) await inFlight;
    },
  };
}

/** The functions whose records hold these ids (only ids that have a record). */
async function ownersOf(sql: Sql, ids: string[]): Promise<Map<string, string>> {
  if (ids.length === 0) return new Map();
  const rows = await sql`select id, function from jetfn.invocations where id = any(${ids})`;
  return new Map(rows.map((row) => [row.id as string, row.function as string]));
}

/**
 * The function whose record holds invocation id `id`, when that is another function than `fn`:
 * the job of `fn` reuses an id that is not its own.
 */
export async function otherOwner(sql: Sql, id: string, fn: string): Promise<string | undefined> {
  const owner = await ownerOf(sql, id);
  return owner !== undefined && owner !== fn ? owner : undefined;
}

/** The function whose record holds invocation id `id`; undefined when the id has no record. */
export async function ownerOf(sql: Sql, id: string): Promise<string | undefined> {
  return (await ownersOf(sql, [id])).get(id);
}

/** The error of a job refused because its id belongs to a job of another function (`owner`, when known). */
export function idConflictError(id: string, fn: string, owner: string | undefined, cause?: unknown): JetfnError {
  return new JetfnError(
    "E_ID_CONFLICT",
    `invocation id ${id} already belongs to a job of ${owner ?? "another function"}; this job of ${fn} was refused`,
    cause === undefined ? undefined : { cause },
  );
}

/** Whether timestamp `a` (as the driver reads it) is later than `b`; false when either is missing. */
function laterThan(a: string | null, b: string | null): boolean {
  return a !== null && b !== null && new Date(a).getTime() > new Date(b).getTime();
}

/** Reads one invocation by id. */
export async function getInvocation(client: DatabaseClient, id: string): Promise<InvocationRecord | undefined> {
  const [row] = await client.db.select().from(invocations).where(eq(invocations.id, id)).limit(1);
  if (!row) return undefined;
  return {
    id: row.id,
    function: row.function,
    status: row.status,
    attempts: row.attempts,
    input: row.input,
    result: row.result,
    error: row.error as StoredError | null,
    errors: row.errors as StoredError[],
    progress: row.progress,
    enqueuedAt: isoTimestamp(row.enqueuedAt),
    startedAt: isoTimestamp(row.startedAt),
    finishedAt: isoTimestamp(row.finishedAt),
    updatedAt: isoTimestamp(row.updatedAt) as string,
    retryOf: row.retryOf,
    retriedAs: row.retriedAs,
    retriedAt: isoTimestamp(row.retriedAt),
    droppedAt: isoTimestamp(row.droppedAt),
    // A sleep's end, or a wait's timeout.
    wakeAt: row.status === "sleeping" || row.status === "awaiting" ? isoTimestamp(row.wakeAt) : null,
    // Set by the step's failure, after which the record changed no more (a job-level failure since
    // waits for JetStream's redelivery instead).
    retryAt: row.status === "failed" && laterThan(row.wakeAt, row.updatedAt) ? isoTimestamp(row.wakeAt) : null,
    resume: row.resume,
    labels: storedLabels(row),
  };
}

const RESUME_SQL =
  "select outcome, attempt, input::text as input, enqueued_at, stream_seq, retry_of, priority, debounce_key, singleton_key " +
  "from jetfn.resume_invocation($1, $2, $3, $4, $5, true)";

/**
 * What a durable sleep's resumption of token `token` finds (jetfn.resume_invocation, 0034): `run`,
 * with the record made `running`, the attempt (the attempts spent before the resumption plus its
 * `delivery` count; or `attempt`, for a resumption woken after waiting for a limit, which kept its
 * own), and what the record holds of the job; else why it must not run: `ended`, `stale` (another
 * token owns the invocation), `foreign` (another function's id), `missing`.
 */
export type Resumed =
  | { outcome: "run"; record: JobRecord }
  | { outcome: "ended" | "stale" | "foreign" | "missing"; record?: undefined };

export async function resumeInvocation(
  sql: Sql,
  id: string,
  fn: string,
  token: string,
  delivery: number,
  attempt: number | undefined,
): Promise<Resumed> {
  const [row] = await sql.unsafe(RESUME_SQL, [id, fn, token, delivery, attempt ?? null], PREPARED);
  if (row?.outcome !== "run") return { outcome: (row?.outcome ?? "missing") as "ended" };
  const labels = storedLabels({
    priority: row.priority,
    debounceKey: row.debounce_key,
    singletonKey: row.singleton_key,
  });
  return {
    outcome: "run",
    record: {
      id,
      fn,
      attempt: row.attempt,
      input: JSON.parse(row.input),
      enqueuedAt: isoTimestamp(row.enqueued_at) ?? isoNow(),
      startedAt: isoNow(),
      streamSeq: Number(row.stream_seq ?? 0),
      retryOf: row.retry_of ?? undefined,
      labels: hasLabels(labels) ? labels : undefined,
      resume: token,
    },
  };
}

/** The labels a record keeps, leaving out what it does not have. */
function storedLabels(row: {
  priority: number | null;
  debounceKey: string | null;
  singletonKey: string | null;
}): JobLabels {
  const labels: JobLabels = {};
  if (row.priority) labels.priority = row.priority;
  if (row.debounceKey !== null) labels.debounceKey = row.debounceKey;
  if (row.singletonKey !== null) labels.singletonKey = row.singletonKey;
  return labels;
}

/**
 * Postgres's text form of a timestamptz (`2026-12-06 06:39:44.09+00`) as ISO 8601 in UTC, the form
 * every other command and API prints.
 */
export function isoTimestamp(value: string | null): string | null {
  return value === null ? null : new Date(value).toISOString();
}

// A cancel may overwrite an earlier cancel's record (another reason); every other final status stands.
const CANCEL_SQL = `
insert into jetfn.invocations as i (id, function, status, error, errors, finished_at, updated_at)
values ($1, $2, 'cancelled', $3::jsonb, jsonb_build_array($3::jsonb), clock_timestamp(), clock_timestamp())
on conflict (id) do update set
  status = 'cancelled', error = excluded.error,
  errors = jetfn.append_bounded(i.errors, excluded.error, ${ERROR_HISTORY_LIMIT}),
  finished_at = excluded.finished_at, updated_at = excluded.updated_at, progress = null
where (not jetfn.is_final(i.status) or i.status = 'cancelled') and i.function = excluded.function
returning id`;

/**
 * Records job `id` of `fn` as cancelled, unless it already ended. False when it had (or the id is
 * another function's): the cancel came too late.
 */
export async function recordCancelled(sql: Sql, id: string, fn: string, error: StoredError): Promise<boolean> {
  return sql.begin(async (tx) => {
    const rows = await tx.unsafe(CANCEL_SQL, [id, fn, storableJson(error)] as never[]);
    // A durable wait it ended stops waiting (it would stay in the matcher's index for ever); read
    // after the record's lock, so a wait committed just before is seen.
    if (rows.length > 0) await tx.unsafe(END_WAITS_SQL, [id] as never[]);
    return rows.length > 0;
  });
}

const END_WAITS_SQL =
  "update jetfn.steps set status = 'timed_out', wake_at = null, finished_at = clock_timestamp(), " +
  "updated_at = clock_timestamp() where invocation_id = $1 and status = 'waiting'";
