import { randomUUID } from "node:crypto";
import { sql as drizzleSql, type SQL } from "drizzle-orm";
import type { Sql } from "postgres";
import type { z } from "zod";
import type { FlowControlOptions } from "../flow/keyed-enqueue-request";
import { type DelayOptions, dueTime } from "../invocation/job-delay";
import { eventMessage, jobMessage, type OutboxMessage } from "../outbox/outbox-message";
import type { EventDefinition } from "../sdk/define-event";
import type { FinalStatement } from "./invocation-transaction";

/** A drizzle transaction (or database) an app writes outbox rows through: anything with `execute`. */
export interface OutboxTransaction {
  execute(query: SQL): PromiseLike<unknown>;
}

/** Options of `enqueueInTransaction` / `emitInTransaction`. */
export interface OutboxWriteOptions {
  /** Message id (the job's invocation id for jobs); random when omitted. A repeat is published once. */
  id?: string;
}

/**
 * Options of `enqueueInTransaction`: an id, when the job should run, and its flow control (a
 * priority, a singleton or debounce key), as for `ctx.enqueue`: keys are claimed by the relay once
 * the transaction committed.
 */
export interface OutboxJobOptions extends OutboxWriteOptions, DelayOptions, FlowControlOptions {}

/** A row waiting in the outbox, as the relay reads it. */
export interface OutboxRow extends OutboxMessage {
  position: number;
}

/** How far behind the relay is: rows not yet published and the age of the oldest. */
export interface OutboxLag {
  count: number;
  /** Age of the oldest unpublished row in milliseconds; 0 when the outbox is empty. */
  oldestAgeMs: number;
}

/** NATS's default `max_payload`; apps writing outside a runtime cannot ask the server. */
const DEFAULT_MAX_PAYLOAD = 1_048_576;

/**
 * Writes a job for function `name` into the outbox inside the caller's own drizzle transaction; the
 * runtimes' relay publishes it to `fn.job.<name>` once the transaction commits (never if it rolls
 * back). Returns the job's id, usable with `client.status` / `client.result`.
 * @example
 * await db.transaction(async (tx) => {
 *   await tx.insert(orders).values(order);
 *   await enqueueInTransaction(tx, "billing.charge", { orderId: order.id });
 * });
 */
export async function enqueueInTransaction(
  tx: OutboxTransaction,
  name: string,
  input: unknown,
  options: OutboxJobOptions = {},
): Promise<{ id: string }> {
  const id = options.id ?? randomUUID();
  await tx.execute(insertQuery(jobMessage(name, input, id, DEFAULT_MAX_PAYLOAD, dueTime(options), options)));
  return { id };
}

/**
 * Writes an event into the outbox inside the caller's own drizzle transaction; every listener gets
 * it once the transaction commits. Checked against the event's `defineEvent` schema.
 * @example await emitInTransaction(tx, commentCreated, { postId, commentId });
 */
export async function emitInTransaction<E extends string | EventDefinition>(
  tx: OutboxTransaction,
  event: E,
  data: E extends EventDefinition<infer S> ? z.input<S> : unknown,
  options: OutboxWriteOptions = {},
): Promise<{ id: string }> {
  const message = eventMessage(event, data, options.id, DEFAULT_MAX_PAYLOAD);
  await tx.execute(insertQuery(message));
  return { id: message.id };
}

function insertQuery(message: OutboxMessage): SQL {
  return drizzleSql`insert into jetfn.outbox (id, subject, headers, body) values (${message.id}, ${message.subject}, ${JSON.stringify(message.headers)}::jsonb, ${message.body}) on conflict (id) do nothing`;
}

/**
 * The statement that writes an invocation's messages, in order, with its final statement (the
 * job's fenced record) when there is one: one statement, so it is atomic even without a transaction.
 */
export function outboxStatement(
  messages: readonly OutboxMessage[],
  origin: { functionName: string; invocationId: string },
  final?: FinalStatement,
): FinalStatement {
  const base = final?.params.length ?? 0;
  const insert =
    "insert into jetfn.outbox (id, subject, headers, body, function, invocation_id) " +
    `select m.value->>'id', m.value->>'subject', m.value->'headers', m.value->>'body', $${base + 2}, $${base + 3} ` +
    `from jsonb_array_elements($${base + 1}::jsonb) with ordinality as m(value, ord) order by m.ord ` +
    "on conflict (id) do nothing";
  const params = [...(final?.params ?? []), JSON.stringify(messages), origin.functionName, origin.invocationId];
  return final ? { text: `with jetfn_outbox_rows as (${insert}) ${final.text}`, params } : { text: insert, params };
}

// Two-key advisory lock space, apart from the single-key one migrations use.
const SWEEP_LOCK = [0x6a66, 0x6f62] as const;

/**
 * Rows a sweep publishes, oldest first, taken only by the one runtime holding the sweep lock (so
 * every invocation's messages leave in order). Fresh rows of invocations are skipped: the runtime
 * that committed them publishes them itself right away. So are `waiting` rows (positions whose
 * last publish was refused, until their back-off ends), which would otherwise fill every batch.
 */
export async function lockSweepBatch(
  tx: Sql,
  limit: number,
  graceMs: number,
  waiting: readonly number[] = [],
): Promise<OutboxRow[] | undefined> {
  const [lock] = await tx`select pg_try_advisory_xact_lock(${SWEEP_LOCK[0]}, ${SWEEP_LOCK[1]}) as locked`;
  if (!lock?.locked) return undefined;
  const rows = await tx`
    select position, id, subject, headers, body from jetfn.outbox
    where (invocation_id is null or created_at < clock_timestamp() - make_interval(secs => ${graceMs / 1000}))
      and position <> all(${waiting as number[]}::bigint[])
    order by position limit ${limit}`;
  return rows.map((row) => ({
    position: Number(row.position),
    id: row.id as string,
    subject: row.subject as string,
    headers: row.headers as Record<string, string>,
    body: row.body as string,
  }));
}

/** An outbox row the relay will not publish, and why. */
export interface RefusedRow {
  position: number;
  reason: string;
}

/** A row moved to `jetfn.outbox_set_aside`, as the warning and the `outbox:set-aside` event report it. */
export interface SetAsideRow {
  position: number;
  id: string;
  subject: string;
  function: string | null;
  invocationId: string | null;
  reason: string;
}

/**
 * Moves refused rows from the outbox to `jetfn.outbox_set_aside`, with their reason, in the
 * caller's transaction. Needs only `insert` on the set-aside table: the runtime role (and so
 * handler code) may add rows there but not read, change or remove them.
 */
export async function setAsideRows(tx: Sql, refused: readonly RefusedRow[]): Promise<SetAsideRow[]> {
  if (refused.length === 0) return [];
  const rows = await tx`
    with refused as (
      select * from unnest(${refused.map((row) => row.position)}::bigint[], ${refused.map((row) => row.reason)}::text[])
        as r(position, reason)
    ), moved as (
      delete from jetfn.outbox o using refused r where o.position = r.position
      returning o.position, o.id, o.subject, o.headers, o.body, o.function, o.invocation_id, o.created_at, r.reason
    ), kept as (
      insert into jetfn.outbox_set_aside (position, id, subject, headers, body, function, invocation_id, created_at, reason)
      select * from moved
    )
    select position, id, subject, function, invocation_id, reason from moved`;
  return rows.map((row) => ({
    position: Number(row.position),
    id: row.id as string,
    subject: row.subject as string,
    function: (row.function as string | null) ?? null,
    invocationId: (row.invocation_id as string | null) ?? null,
    reason: row.reason as string,
  }));
}

/** Deletes published rows by position. */
export async function deletePublished(sql: Sql, positions: readonly number[]): Promise<void> {
  if (positions.length > 0)
    await sql`delete from jetfn.outbox where position = any(${positions as number[]}::bigint[])`;
}

/** Deletes published rows by message id (after a publish right after commit). */
export async function deletePublishedIds(sql: Sql, ids: readonly string[]): Promise<void> {
  if (ids.length > 0) await sql`delete from jetfn.outbox where id = any(${ids as string[]}::text[])`;
}

/** Reads the relay's lag: unpublished rows and the age of the oldest (for `jetfn ls`). */
export async function readOutboxLag(sql: Sql): Promise<OutboxLag> {
  const [row] = await sql`
    select count(*)::int as count,
           coalesce(extract(epoch from clock_timestamp() - min(created_at)) * 1000, 0)::float8 as oldest_age_ms
    from jetfn.outbox`;
  return { count: Number(row?.count ?? 0), oldestAgeMs: Math.round(Number(row?.oldest_age_ms ?? 0)) };
}
