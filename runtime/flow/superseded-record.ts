import type { NatsConnection } from "@nats-io/transport-node";
import type { Sql } from "postgres";
import { ERROR_HISTORY_LIMIT, type StoredError } from "../db/invocation-store";
import { storableJson } from "../db/storable-json";
import { doneSubject } from "../nats/subjects";
import { isoNow } from "../support/clock";

/**
 * Records debounced job `id` of `fn` as superseded by job `by`, unless it already ended; the status
 * is final (migration 0023), so an attempt of it that would still finish is fenced out. Its record
 * keeps its debounce key, as a job's that ran does (migration 0029).
 */
const SUPERSEDED_SQL = `
insert into jetfn.invocations as i (id, function, status, error, errors, finished_at, updated_at, debounce_key)
values ($1, $2, 'superseded', $3::jsonb, jsonb_build_array($3::jsonb), clock_timestamp(), clock_timestamp(), $4)
on conflict (id) do update set
  status = 'superseded', error = excluded.error,
  errors = jetfn.append_bounded(i.errors, excluded.error, ${ERROR_HISTORY_LIMIT}),
  finished_at = excluded.finished_at, updated_at = excluded.updated_at, progress = null,
  debounce_key = excluded.debounce_key
where not jetfn.is_final(i.status) and i.function = excluded.function
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

/**
 * Ends a debounced job that a later one replaced: writes its `superseded` record and tells waiters
 * (`jetfn.done.<id>`). False when it had already ended (its record stands).
 */
export async function endSuperseded(
  sql: Sql,
  nc: NatsConnection,
  job: { id: string; fn: string },
  by: string,
  key: string,
): Promise<boolean> {
  const error = supersededError(job.id, by, key);
  const rows = await sql.unsafe(SUPERSEDED_SQL, [job.id, job.fn, storableJson(error), key] as never[]);
  if (rows.length === 0) return false;
  nc.publish(doneSubject(job.id), JSON.stringify({ id: job.id, fn: job.fn, status: "superseded", error }));
  return true;
}
