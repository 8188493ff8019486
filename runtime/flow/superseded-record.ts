import type { NatsConnection } from "@nats-io/transport-node";
import type { Sql } from "postgres";
import { ERROR_HISTORY_LIMIT, type StoredError } from "../db/invocation-store";
import { storableJson } from "../db/storable-json";
import { doneSubject } from "../nats/subjects";
import { isoNow } from "../support/clock";

/**
 * Records debounced job `id` of `fn` as superseded by job `by`, if it has not started: no record
 * yet, or one still `queued`. A debounced job is superseded before it moves to its function's queue,
 * so a job of the id that runs, ran or waits for a retry is another copy of it (a repeated enqueue,
 * a delayed message a client published under the id): that job is left alone. The status is final
 * (migration 0023), so an attempt that would still start is fenced out. Its record keeps its
 * debounce key, as a job's that ran does (migration 0029).
 */
const SUPERSEDED_SQL = `
insert into jetfn.invocations as i (id, function, status, error, errors, finished_at, updated_at, debounce_key)
values ($1, $2, 'superseded', $3::jsonb, jsonb_build_array($3::jsonb), clock_timestamp(), clock_timestamp(), $4)
on conflict (id) do update set
  status = 'superseded', error = excluded.error,
  errors = jetfn.append_bounded(i.errors, excluded.error, ${ERROR_HISTORY_LIMIT}),
  finished_at = excluded.finished_at, updated_at = excluded.updated_at, progress = null,
  debounce_key = excluded.debounce_key
where i.status = 'queued' and i.function = excluded.function
returning id`;

/**
 * Records a singleton job that was never enqueued as superseded, only if no record has the id: the
 * id came from an outbox row, and must not end a job of that id that exists (another's, maybe).
 * Its record keeps its singleton key.
 */
const NEVER_ENQUEUED_SQL = `
insert into jetfn.invocations (id, function, status, error, errors, finished_at, updated_at, singleton_key)
values ($1, $2, 'superseded', $3::jsonb, jsonb_build_array($3::jsonb), clock_timestamp(), clock_timestamp(), $4)
on conflict (id) do nothing
returning id`;

/** The error a superseded job's record keeps. */
export function supersededError(id: string, by: string, key: string): StoredError {
  return {
    attempt: 0,
    code: "E_SUPERSEDED",
    name: "JetfnError",
    message: `job ${id} was superseded by job ${by}, enqueued later with the same debounce key ${JSON.stringify(key)}`,
    at: isoNow(),
  };
}

/** The error of a singleton job from the outbox that found its key held when the relay enqueued it. */
function singletonHeldError(id: string, holder: string, key: string): StoredError {
  return {
    attempt: 0,
    code: "E_SINGLETON_HELD",
    name: "JetfnError",
    message: `job ${id} was not enqueued: job ${holder} held the singleton key ${JSON.stringify(key)} when its transaction committed, and runs in its place`,
    at: isoNow(),
  };
}

/**
 * Ends a debounced job that a later one replaced: writes its `superseded` record and tells waiters
 * (`jetfn.done.<id>`). False when a job of the id had started or ended (its record stands).
 */
export async function endSuperseded(
  sql: Sql,
  nc: NatsConnection,
  job: { id: string; fn: string },
  by: string,
  key: string,
): Promise<boolean> {
  return recordSuperseded(sql, nc, job, supersededError(job.id, by, key), SUPERSEDED_SQL, key);
}

/**
 * Ends a singleton job from the outbox that folded into the job holding its key: its `superseded`
 * record names the holder (E_SINGLETON_HELD), and waiters hear it. False when the id had a record.
 */
export async function endNeverEnqueued(
  sql: Sql,
  nc: NatsConnection,
  job: { id: string; fn: string },
  holder: string,
  key: string,
): Promise<boolean> {
  return recordSuperseded(sql, nc, job, singletonHeldError(job.id, holder, key), NEVER_ENQUEUED_SQL, key);
}

async function recordSuperseded(
  sql: Sql,
  nc: NatsConnection,
  job: { id: string; fn: string },
  error: StoredError,
  statement: string,
  /** Its debounce or singleton key, which the record keeps. */
  key: string,
): Promise<boolean> {
  const rows = await sql.unsafe(statement, [job.id, job.fn, storableJson(error), key] as never[]);
  if (rows.length === 0) return false;
  nc.publish(doneSubject(job.id), JSON.stringify({ id: job.id, fn: job.fn, status: "superseded", error }));
  return true;
}
