import {
  AckPolicy,
  type Consumer,
  type ConsumerMessages,
  DeliverPolicy,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
} from "@nats-io/jetstream";
import type { Logger } from "pino";
import type { Sql, TransactionSql } from "postgres";
import { commitWith } from "../db/invocation-transaction";
import { outboxStatement } from "../db/outbox";
import { storableJson } from "../db/storable-json";
import { isDatabaseLoss } from "../db/transaction-parts";
import { resumeHeader, waitMatchToken } from "../invocation/resume-tag";
import { consumerInfo, isNotFound } from "../nats/consumer-lookup";
import { EVENT_PREFIX, EVENT_STREAM, eventSubject } from "../nats/event-stream";
import { MSG_ID_HEADER } from "../nats/subjects";
import { type OutboxMessage, resumptionMessage } from "../outbox/outbox-message";
import { toNanos } from "../support/duration";

/**
 * Resolves durable waits (`ctx.waitForEvent`, docs/durable-steps.md#wait-for-an-event). While some
 * step waits for events of a name, the events stream has a durable consumer for that name,
 * `jetfn-wait-<name>` (dots as colons), which every runtime reads; each batch of events that arrive
 * together is matched with the waiting steps in one query, and each match commits
 * `jetfn.resolve_wait` with the signed resumption that runs the invocation on. Events no step waits
 * for are read by nobody: they cost nothing here. Making a consumer (`watch`) and dropping one whose
 * waits all ended (the sweep) hold a Postgres lock of the event's name, so a wait committed before the
 * lock is taken is seen by the drop, and one committed after finds the consumer made. The runtime
 * that records a wait also reads the events stored since the wait's `after_at` (`catchUp`): an event
 * stored before the wait committed, which the consumer saw before there was anything to match,
 * counts too. A consumer made for a wait starts at the earliest `after_at` of its name's waits.
 */
export const WAIT_CONSUMER_PREFIX = "jetfn-wait-";
/** The one consumer of every event the version before read; dropped once no runtime reads it. */
const OLD_SHARED_CONSUMER = "jetfn-waiters";

/** The durable consumer of the events named `event`, while some step waits for one. */
export function waitConsumerName(event: string): string {
  return WAIT_CONSUMER_PREFIX + event.replaceAll(".", ":");
}

/** Events matched per query. */
const BATCH = 256;
const ACK_WAIT_MS = 30_000;
/** How long a catch-up's pull waits for the events it knows are there. */
const FETCH_EXPIRES_MS = 5_000;
/** Wait before reading again after a failure, and before events given back come again. */
const RETRY_MS = 1_000;
/** Deliveries after which an event that fails alone is skipped (with an error line), not given back again. */
const MAX_DELIVERIES = 20;
/** Postgres error code of jetfn.resolve_wait when the wait no longer waits (another event, a timeout). */
const NOT_WAITING_CODE = "JF004";
/** First key of the Postgres advisory locks of event names (the second is the name's hash). */
export const WATCH_LOCK_SPACE = 7_423_101;

/** An event as a wait takes it: what `ctx.waitForEvent` returns, and the wait's memo. */
export interface StoredEvent {
  id: string;
  name: string;
  data: unknown;
  /** When the events stream stored it (ISO 8601). */
  time: string;
}

/** A wait just recorded, whose events stored before it began are to be read. */
export interface WaitToCatchUp {
  invocationId: string;
  key: string;
  event: string;
  /** Where the events it may take begin (ISO 8601). */
  afterAt: string;
}

/** What the waiters need from the runtime. */
export interface EventWaitersDependencies {
  sql: Sql;
  js: JetStreamClient;
  manager: JetStreamManager;
  logger: Logger;
  /** The runtimes' secret, which signs resumptions (invocation/resume-tag.ts). */
  resumeSecret: string;
  /** Publishes outbox rows just committed (the relay's sweep is the fallback). */
  publishCommitted(messages: OutboxMessage[], log: Logger): Promise<void>;
  /** How often the sweep runs (default 5 s); tests shorten it. */
  sweepMs?: number;
}

// Which waiting steps each event matches: the shapes (event name and sorted paths) waiting now, then
// the index on (event, match_paths, match_values). An event counts for a wait only if stored after
// its after_at, and only while the invocation awaits.
const MATCH_SQL = `
select s.invocation_id, s.key, s.seq, i.function, i.priority, e.ord::integer as ord
from jsonb_array_elements($1::jsonb) with ordinality as e(value, ord)
cross join lateral (
  select distinct w.match_paths from jetfn.steps w where w.status = 'waiting' and w.event = e.value->>'name'
) shapes
join jetfn.steps s on s.status = 'waiting' and s.event = e.value->>'name' and s.match_paths = shapes.match_paths
  and s.match_values = jetfn.match_values(e.value->'data', shapes.match_paths)
  and s.after_at <= (e.value->>'time')::timestamptz
join jetfn.invocations i on i.id = s.invocation_id and i.status = 'awaiting'
order by e.ord`;
const RESOLVE_SQL = "select jetfn.resolve_wait($1, $2, $3, $4, $5::jsonb, $6)";
const CAUGHT_UP_SQL =
  "update jetfn.steps set caught_up_at = clock_timestamp() where invocation_id = $1 and key = $2 and status = 'waiting'";
// Waits recorded a while ago whose catch-up never finished (their runtime died, or NATS or Postgres
// did not answer), oldest first.
const NOT_CAUGHT_UP_SQL = `
select invocation_id, key, event, after_at from jetfn.steps
where status = 'waiting' and caught_up_at is null and started_at < clock_timestamp() - $1 * interval '1 millisecond'
order by started_at limit 100`;
// The lock of an event name's consumer, held to the end of the transaction (see the class's comment).
const WATCH_LOCK_SQL = "select pg_advisory_xact_lock($1, hashtext($2))";
const WAITED_NAMES_SQL = "select distinct event from jetfn.steps where status = 'waiting'";
const IS_WAITED_SQL = "select exists (select from jetfn.steps where status = 'waiting' and event = $1) as waited";
const EARLIEST_WAIT_SQL = "select min(after_at) as after_at from jetfn.steps where status = 'waiting' and event = $1";
/** How often each runtime sweeps (default), and how old a wait not caught up is first swept. */
const SWEEP_MS = 5_000;
/** Every how many sweeps the stream's consumers are listed for ones nothing reads or waits for. */
const LISTING_EVERY = 12;

interface MatchRow {
  invocation_id: string;
  key: string;
  seq: number;
  function: string;
  priority: number | null;
  ord: number;
}

/** This runtime's reading of one event name's consumer. */
interface Reader {
  messages?: ConsumerMessages;
  ended: boolean;
  loop?: Promise<void>;
}

export class EventWaiters {
  readonly #deps: EventWaitersDependencies;
  /** The event names whose consumers this runtime reads. */
  readonly #readers = new Map<string, Reader>();
  #stopped = false;
  /** Events received and not matched yet: those that arrive together are matched in one query. */
  readonly #pending: JsMsg[] = [];
  #flushing: Promise<void> = Promise.resolve();
  #flushScheduled = false;
  #sweeper: ReturnType<typeof setInterval> | undefined;
  #sweeping: Promise<void> | undefined;
  #sweeps = 0;

  constructor(deps: EventWaitersDependencies) {
    this.#deps = deps;
  }

  /** Reads the consumers of the names steps wait for now, and sweeps from now on. */
  async start(): Promise<void> {
    await this.sweep();
    this.#sweeper = setInterval(() => void this.sweep(), this.#deps.sweepMs ?? SWEEP_MS);
    this.#sweeper.unref();
  }

  /** Stops reading; resolves once the events in hand were matched (or given back). */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearInterval(this.#sweeper);
    const readers = [...this.#readers.values()];
    for (const reader of readers) this.#end(reader);
    await Promise.all(readers.map((reader) => reader.loop));
    await this.#flushing;
    await this.#sweeping;
  }

  /** The event names whose consumers this runtime reads now. */
  get watched(): string[] {
    return [...this.#readers.keys()];
  }

  /**
   * Makes sure the events named `event` are read while a step waits for one: makes the name's
   * consumer if there is none (from the earliest `after_at` of its waits; none if nothing waits any
   * more), and reads it. Resolves to true when it made the consumer.
   */
  async watch(event: string): Promise<boolean> {
    const { manager } = this.#deps;
    const name = waitConsumerName(event);
    const made = await this.#holdingNameLock(event, async (tx) => {
      if (await consumerInfo(manager, EVENT_STREAM, name)) return false;
      const [row] = await tx.unsafe(EARLIEST_WAIT_SQL, [event], { prepare: true });
      if (!row?.after_at) return false;
      await manager.consumers.add(EVENT_STREAM, {
        durable_name: name,
        description: `jetfn: the ${event} events that end durable waits (ctx.waitForEvent), while a step waits for one`,
        filter_subject: eventSubject(event),
        deliver_policy: DeliverPolicy.StartTime,
        opt_start_time: new Date(row.after_at as string).toISOString(),
        ack_policy: AckPolicy.Explicit,
        ack_wait: toNanos(ACK_WAIT_MS),
        max_ack_pending: BATCH * 4,
      });
      return true;
    });
    // A reader of this runtime's from before it was missing reads nothing: a new one reads the new consumer.
    const stale = made && this.#readers.get(event);
    if (stale) this.#end(stale);
    this.#read(event);
    return made;
  }

  /** Drops the consumer of `event` if no step waits for one (checked under the name's lock). */
  async #dropIfIdle(event: string): Promise<void> {
    const { manager } = this.#deps;
    const dropped = await this.#holdingNameLock(event, async (tx) => {
      const [row] = await tx.unsafe(IS_WAITED_SQL, [event], { prepare: true });
      if (row?.waited) return false;
      await manager.consumers.delete(EVENT_STREAM, waitConsumerName(event)).catch((error: unknown) => {
        if (!isNotFound(error)) throw error;
      });
      return true;
    });
    const reader = this.#readers.get(event);
    if (dropped && reader) this.#end(reader);
  }

  #holdingNameLock<T>(event: string, work: (tx: TransactionSql) => Promise<T>): Promise<T> {
    return this.#deps.sql.begin(async (tx) => {
      await tx.unsafe(WATCH_LOCK_SQL, [WATCH_LOCK_SPACE, event], { prepare: true });
      return work(tx);
    }) as Promise<T>;
  }

  /** Reads the consumer of `event` (unless this runtime does already) until it is dropped or the waiters stop. */
  #read(event: string): void {
    if (this.#stopped || this.#readers.has(event)) return;
    const reader: Reader = { ended: false };
    this.#readers.set(event, reader);
    reader.loop = this.#readUntilDropped(event, reader).finally(() => {
      if (this.#readers.get(event) === reader) this.#readers.delete(event);
    });
  }

  async #readUntilDropped(event: string, reader: Reader): Promise<void> {
    const { js, manager, logger } = this.#deps;
    const name = waitConsumerName(event);
    while (!reader.ended) {
      try {
        const consumer = await js.consumers.get(EVENT_STREAM, name);
        // A consumer dropped under it ends the iteration (instead of waiting for it for ever).
        reader.messages = await consumer.consume({ max_messages: BATCH, abort_on_missing_resource: true });
        if (reader.ended) reader.messages.stop();
        for await (const message of reader.messages) this.#take(message);
      } catch (error) {
        if (reader.ended) return;
        if (!isNotFound(error)) logger.warn({ err: error, event }, "Reading the events that end durable waits failed.");
      }
      if (reader.ended) return;
      // Dropped (nothing waits for these events any more): no longer read here, until a wait watches it again.
      const exists = await consumerInfo(manager, EVENT_STREAM, name).then(Boolean, () => true);
      if (!exists) {
        this.#end(reader);
        return;
      }
      await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
    }
  }

  #end(reader: Reader): void {
    reader.ended = true;
    reader.messages?.stop();
    for (const [event, current] of this.#readers) if (current === reader) this.#readers.delete(event);
  }

  #take(message: JsMsg): void {
    this.#pending.push(message);
    if (this.#flushScheduled) return;
    this.#flushScheduled = true;
    // After the messages already arrived with this one: they are matched together.
    this.#flushing = this.#flushing
      .then(() => new Promise((resolve) => setImmediate(resolve)))
      .then(() => this.#flush())
      .catch((error: unknown) => {
        // An ack on a closed connection, say: what was not acked comes again after the ack wait.
        this.#deps.logger.warn({ err: error }, "Acknowledging matched events failed.");
      });
  }

  async #flush(): Promise<void> {
    this.#flushScheduled = false;
    while (this.#pending.length > 0) {
      const messages = this.#pending.splice(0, BATCH);
      try {
        await this.match(messages.flatMap((message) => storedEvent(message) ?? []));
        for (const message of messages) message.ack();
      } catch (error) {
        if (isDatabaseLoss(error)) {
          // Postgres away: every event would fail alone too. Given back whole, they come again.
          this.#deps.logger.warn({ err: error }, "Events could not be matched with durable waits; they come again.");
          for (const message of messages) message.nak(RETRY_MS * Math.min(message.info.deliveryCount, 30));
          continue;
        }
        this.#deps.logger.warn(
          { err: error },
          "Events could not be matched with durable waits; trying them one by one.",
        );
        // One by one: an event that fails alone is not allowed to hold back the others.
        for (const message of messages) await this.#matchAlone(message);
      }
    }
  }

  /**
   * Matches one event; given back when that fails, and skipped when Postgres itself refuses it again
   * and again (not while Postgres is away: that is no fault of the event).
   */
  async #matchAlone(message: JsMsg): Promise<void> {
    const event = storedEvent(message);
    try {
      await this.match(event ? [event] : []);
      message.ack();
    } catch (error) {
      if (!isDatabaseLoss(error) && message.info.deliveryCount >= MAX_DELIVERIES) {
        this.#deps.logger.error(
          { err: error, subject: message.subject, seq: message.seq },
          "An event could not be matched with durable waits after repeated tries; it is skipped.",
        );
        message.term();
      } else {
        message.nak(RETRY_MS);
      }
    }
  }

  /** Resolves the waits `events` match, each with the first event (in order) that matches it; resolves to how many. */
  async match(events: StoredEvent[]): Promise<number> {
    if (events.length === 0) return 0;
    const { sql, logger } = this.#deps;
    // storableJson: a `\u0000` or a lone surrogate in one event's data must not make jsonb refuse the batch.
    const rows = (await sql.unsafe(MATCH_SQL, [storableJson(events)], { prepare: true })) as unknown as MatchRow[];
    const resolved = new Set<string>();
    for (const row of rows) {
      if (resolved.has(row.invocation_id)) continue;
      const event = events[row.ord - 1] as StoredEvent;
      if (!(await this.#resolve(row, event))) continue;
      resolved.add(row.invocation_id);
      logger.info(
        { fn: row.function, invocationId: row.invocation_id, step: row.key, event: event.name, eventId: event.id },
        "An event ended a durable wait; the job goes on.",
      );
    }
    return resolved.size;
  }

  /**
   * Reads the events of `name` stored from `afterAt` up to the stream's end as of now, and matches
   * them: the catch-up of a wait just recorded. Resolves to how many waits it resolved.
   */
  async catchUp(name: string, afterAt: string): Promise<number> {
    const { js, manager } = this.#deps;
    const subject = eventSubject(name);
    const last = await manager.streams.getMessage(EVENT_STREAM, { last_by_subj: subject }).catch(() => null);
    if (!last || last.time.getTime() < Date.parse(afterAt)) return 0;
    const consumer = await js.consumers.get(EVENT_STREAM, {
      filter_subjects: subject,
      deliver_policy: DeliverPolicy.StartTime,
      opt_start_time: afterAt,
    });
    try {
      return await this.#matchUpTo(consumer, last.seq);
    } finally {
      await consumer.delete().catch(() => undefined);
    }
  }

  /** Matches what `consumer` delivers up to the stream's sequence `lastSeq`. */
  async #matchUpTo(consumer: Consumer, lastSeq: number): Promise<number> {
    let resolved = 0;
    for (;;) {
      const batch = await consumer.fetch({ max_messages: BATCH, expires: FETCH_EXPIRES_MS });
      const events: StoredEvent[] = [];
      let received = 0;
      let done = false;
      for await (const message of batch) {
        received++;
        if (message.seq > lastSeq) done = true;
        else {
          const event = storedEvent(message);
          if (event) events.push(event);
          if (message.info.pending === 0 || message.seq === lastSeq) done = true;
        }
        if (done) {
          batch.stop();
          break;
        }
      }
      resolved += await this.match(events);
      if (done || received === 0) return resolved;
    }
  }

  /**
   * Watches a wait's event name, and catches it up (see catchUp) unless the name's consumer was just
   * made: it starts at the earliest wait's `after_at`. Marked done on the wait's row once finished.
   */
  async catchUpWait(wait: WaitToCatchUp): Promise<number> {
    const made = await this.watch(wait.event);
    const resolved = made ? 0 : await this.catchUp(wait.event, wait.afterAt);
    await this.#deps.sql.unsafe(CAUGHT_UP_SQL, [wait.invocationId, wait.key], { prepare: true });
    return resolved;
  }

  /**
   * Catches up the waits whose own catch-up never finished, reads the consumers of the names steps
   * wait for, and drops those of names no step waits for any more (any runtime may do any of it;
   * doing one twice is harmless).
   */
  sweep(): Promise<void> {
    this.#sweeping ??= (async () => {
      const { sql } = this.#deps;
      try {
        const rows = await sql.unsafe(NOT_CAUGHT_UP_SQL, [SWEEP_MS], { prepare: true });
        for (const row of rows) {
          if (this.#stopped) return;
          const afterAt = new Date(row.after_at as string).toISOString();
          await this.catchUpWait({ invocationId: row.invocation_id, key: row.key, event: row.event, afterAt });
        }
        const names = await sql.unsafe(WAITED_NAMES_SQL, [], { prepare: true });
        const waited = new Set(names.map((row) => row.event as string));
        // Every name, read here or not: a consumer deleted by hand is made again (from its earliest wait).
        for (const event of waited) if (!this.#stopped) await this.watch(event);
        for (const event of this.watched) if (!this.#stopped && !waited.has(event)) await this.#dropIfIdle(event);
        if (this.#sweeps++ % LISTING_EVERY === 0 && !this.#stopped) await this.#dropUnread(waited);
      } catch (error) {
        if (!this.#stopped)
          this.#deps.logger.warn({ err: error }, "Sweeping durable waits failed; trying again later.");
      } finally {
        this.#sweeping = undefined;
      }
    })();
    return this.#sweeping;
  }

  /**
   * Drops the consumers no runtime reads of names no step waits for (left by a runtime that stopped
   * before its waits ended), and the version before's shared consumer once nothing pulls from it.
   */
  async #dropUnread(waited: Set<string>): Promise<void> {
    const { manager, logger } = this.#deps;
    const idle: string[] = [];
    let oldShared = false;
    for await (const info of manager.consumers.list(EVENT_STREAM)) {
      if (info.name === OLD_SHARED_CONSUMER) oldShared = info.num_waiting === 0;
      if (!info.name.startsWith(WAIT_CONSUMER_PREFIX)) continue;
      const event = info.name.slice(WAIT_CONSUMER_PREFIX.length).replaceAll(":", ".");
      if (!waited.has(event) && !this.#readers.has(event)) idle.push(event);
    }
    for (const event of idle) await this.#dropIfIdle(event);
    if (oldShared) {
      await manager.consumers.delete(EVENT_STREAM, OLD_SHARED_CONSUMER).catch(() => undefined);
      logger.info(`Dropped the consumer ${OLD_SHARED_CONSUMER}, which no runtime reads any more.`);
    }
  }

  /** Commits one match with the resumption it starts; false when the wait no longer waits. */
  async #resolve(row: MatchRow, event: StoredEvent): Promise<boolean> {
    const { sql, resumeSecret, logger } = this.#deps;
    const token = waitMatchToken(row.seq);
    const header = resumeHeader(resumeSecret, row.function, row.invocation_id, token);
    const resumption = resumptionMessage(
      row.function,
      row.invocation_id,
      header,
      Date.now(),
      row.priority ?? undefined,
    );
    const resolve = {
      text: RESOLVE_SQL,
      params: [row.invocation_id, row.key, event.id, event.time, storableJson(event), token],
    };
    const origin = { functionName: row.function, invocationId: row.invocation_id };
    try {
      await commitWith(sql, undefined, outboxStatement([resumption], origin, resolve));
    } catch (error) {
      if ((error as { code?: unknown }).code === NOT_WAITING_CODE) return false;
      throw error;
    }
    await this.#deps.publishCommitted([resumption], logger);
    return true;
  }
}

/** The event a message of the events stream holds; undefined for a body that is not JSON. */
function storedEvent(message: JsMsg): StoredEvent | undefined {
  let data: unknown;
  try {
    data = message.json();
  } catch {
    return undefined;
  }
  return {
    id: message.headers?.get(MSG_ID_HEADER) || `${message.info.stream}:${message.seq}`,
    name: message.subject.slice(EVENT_PREFIX.length),
    data,
    time: message.time.toISOString(),
  };
}
