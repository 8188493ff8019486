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
import { waitMatchToken } from "../invocation/resume-tag";
import { consumerInfo, isNotFound, lookUpConsumers } from "../nats/consumer-lookup";
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
  /** How often the sweep runs (default 5 s); tests change it. */
  sweepMs?: number;
  /** How long no step waits for a name before its consumer is dropped (default 60 s); tests shorten it. */
  idleDropMs?: number;
  /** Every how many sweeps the events stream's consumers are listed (default 12); tests change it. */
  listingEvery?: number;
  /** The ack wait of the consumers this runtime makes (default 30 s); tests shorten it. */
  ackWaitMs?: number;
}

// Which waiting steps each event matches. The shapes (sorted paths) waiting for each name in the
// batch, read by skipping through steps_waiting_idx (one probe per shape, however many steps wait);
// then, per event and shape, the values its data holds at those paths, looked up in the same index
// (`offset 0` keeps that a lookup per key, and the invocation's a lookup per match: joined, the
// planner may hash every waiting row, or scan the invocations once per match when their statistics
// are stale).
// An event counts for a wait only if stored after its after_at, and only while the invocation awaits.
const MATCH_SQL = `
with e as materialized (
  select value, ord from jsonb_array_elements($1::jsonb) with ordinality as e(value, ord)
),
shapes as materialized (
  select n.name, p.match_paths
  from (select distinct e.value->>'name' as name from e) n
  cross join lateral (
    with recursive p(match_paths) as (
      (select w.match_paths from jetfn.steps w where w.status = 'waiting' and w.event = n.name
       order by w.match_paths limit 1)
      union all
      select (select w.match_paths from jetfn.steps w
              where w.status = 'waiting' and w.event = n.name and w.match_paths > p.match_paths
              order by w.match_paths limit 1)
      from p where p.match_paths is not null
    )
    select match_paths from p where match_paths is not null
  ) p
),
keys as materialized (
  select e.ord, s.name, s.match_paths, jetfn.match_values(e.value->'data', s.match_paths) as match_values,
         (e.value->>'time')::timestamptz as at
  from e join shapes s on s.name = e.value->>'name'
)
select w.invocation_id, w.key, w.seq, i.function, i.priority, k.ord::integer as ord
from keys k
cross join lateral (
  select w.invocation_id, w.key, w.seq from jetfn.steps w
  where w.status = 'waiting' and w.event = k.name and w.match_paths = k.match_paths
    and w.match_values = k.match_values and w.after_at <= k.at
  offset 0
) w
cross join lateral (
  select i.function, i.priority from jetfn.invocations i where i.id = w.invocation_id and i.status = 'awaiting'
  offset 0
) i
order by k.ord`;
const NO_JIT_SQL = "set local jit = off";
const RESOLVE_SQL = "select jetfn.resolve_wait($1, $2, $3, $4, $5::jsonb, $6)";
const CAUGHT_UP_SQL =
  "update jetfn.steps set caught_up_at = clock_timestamp() where invocation_id = $1 and key = $2 and status = 'waiting'";
// Waits recorded a while ago whose catch-up never finished (their runtime died, or NATS or Postgres
// did not answer), oldest first.
const NOT_CAUGHT_UP_SQL = `
select invocation_id, key, event, after_at from jetfn.steps
where status = 'waiting' and caught_up_at is null and started_at < clock_timestamp() - $1 * interval '1 millisecond'
order by started_at limit 100`;
// The lock of an event name's consumer, to the end of the transaction (see the class's comment):
// shared by watches, which may run together, exclusive for a drop.
const WATCH_LOCK_SQL = "select pg_advisory_xact_lock_shared($1, hashtext($2))";
const DROP_LOCK_SQL = "select pg_advisory_xact_lock($1, hashtext($2))";
// The names steps wait for: one probe of steps_waiting_idx per name, however many steps wait.
const WAITED_NAMES_SQL = `
with recursive names(event) as (
  (select event from jetfn.steps where status = 'waiting' order by event limit 1)
  union all
  select (select s.event from jetfn.steps s where s.status = 'waiting' and s.event > n.event order by s.event limit 1)
  from names n where n.event is not null
)
select event from names where event is not null`;
const IS_WAITED_SQL = "select exists (select from jetfn.steps where status = 'waiting' and event = $1) as waited";
const EARLIEST_WAIT_SQL = "select min(after_at) as after_at from jetfn.steps where status = 'waiting' and event = $1";
/** How often each runtime sweeps (default), and how old a wait not caught up is first swept. */
const SWEEP_MS = 5_000;
/** How long no step waits for a name before its consumer is dropped (default): fewer drops and remakes. */
const IDLE_DROP_MS = 60_000;
/** Every how many sweeps the stream's consumers are listed for ones nothing reads or waits for. */
const LISTING_EVERY = 12;
/** A consumer no runtime reads for this long is removed by NATS (a backstop: made again from its waits). */
const INACTIVE_THRESHOLD_MS = 3_600_000;

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
  /** The event name whose consumer it reads. */
  event: string;
  /** When the consumer it reads was made (a consumer made again under the same name is another). */
  created: string;
  messages?: ConsumerMessages;
  ended: boolean;
  loop?: Promise<void>;
}

export class EventWaiters {
  readonly #deps: EventWaitersDependencies;
  /** The event names whose consumers this runtime reads. */
  readonly #readers = new Map<string, Reader>();
  /** Since when (epoch ms) no step waits for a name whose consumer exists. */
  readonly #unwaitedSince = new Map<string, number>();
  /** The old shared consumer's delivered sequence at the last listing that found nothing pulling from it. */
  #oldSharedIdleAt: number | undefined;
  #stopped = false;
  /** Events received and not matched yet: those that arrive together are matched in one query. */
  readonly #pending: JsMsg[] = [];
  #flushing: Promise<void> = Promise.resolve();
  #flushScheduled = false;
  #sweeper: ReturnType<typeof setInterval> | undefined;
  #sweeping: Promise<void> | undefined;
  #sweeps = 0;
  /** Queries and commits of matching done so far: the keep-alive renews held messages only while it grows. */
  #matchesDone = 0;

  constructor(deps: EventWaitersDependencies) {
    this.#deps = deps;
  }

  /** Reads the consumers of the names steps wait for now; the whole sweep runs every 5 s from then. */
  async start(): Promise<void> {
    try {
      await this.#watchAll(await this.#waitedNames());
    } catch (error) {
      this.#deps.logger.warn({ err: error }, "Reading the events of durable waits failed; the sweep tries again.");
    }
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
    const { made, info } = await this.#holdingNameLock(WATCH_LOCK_SQL, event, async (tx) => {
      const existing = await consumerInfo(manager, EVENT_STREAM, name);
      if (existing) return { made: false, info: existing };
      const [row] = await tx.unsafe(EARLIEST_WAIT_SQL, [event], { prepare: true });
      if (!row?.after_at) return { made: false, info: undefined };
      try {
        const info = await manager.consumers.add(EVENT_STREAM, {
          durable_name: name,
          description: `jetfn: the ${event} events that end durable waits (ctx.waitForEvent), while a step waits for one`,
          filter_subject: eventSubject(event),
          deliver_policy: DeliverPolicy.StartTime,
          opt_start_time: new Date(row.after_at as string).toISOString(),
          ack_policy: AckPolicy.Explicit,
          ack_wait: toNanos(this.#deps.ackWaitMs ?? ACK_WAIT_MS),
          max_ack_pending: BATCH * 4,
          inactive_threshold: toNanos(INACTIVE_THRESHOLD_MS),
        });
        return { made: true, info };
      } catch (error) {
        // Another runtime's watch made it meanwhile, from another start: not made here.
        const made = await consumerInfo(manager, EVENT_STREAM, name).catch(() => undefined);
        if (!made) throw error;
        return { made: false, info: made };
      }
    });
    this.#unwaitedSince.delete(event);
    if (info) this.#readFrom(event, info.created);
    return made;
  }

  /** Drops the consumer of `event` if no step waits for one (checked under the name's lock). */
  async #dropIfIdle(event: string): Promise<void> {
    const { manager } = this.#deps;
    const reader = this.#readers.get(event);
    const dropped = await this.#holdingNameLock(DROP_LOCK_SQL, event, async (tx) => {
      const [row] = await tx.unsafe(IS_WAITED_SQL, [event], { prepare: true });
      if (row?.waited) return false;
      await manager.consumers.delete(EVENT_STREAM, waitConsumerName(event)).catch((error: unknown) => {
        if (!isNotFound(error)) throw error;
      });
      return true;
    });
    if (dropped) {
      this.#unwaitedSince.delete(event);
      if (reader) this.#end(reader);
    }
  }

  #holdingNameLock<T>(lock: string, event: string, work: (tx: TransactionSql) => Promise<T>): Promise<T> {
    return this.#deps.sql.begin(async (tx) => {
      await tx.unsafe(lock, [WATCH_LOCK_SPACE, event], { prepare: true });
      return work(tx);
    }) as Promise<T>;
  }

  /** Reads the consumer of `event` made at `created`, unless this runtime does already (a reader of one made before is ended). */
  #readFrom(event: string, created: string): void {
    if (this.#stopped) return;
    const current = this.#readers.get(event);
    if (current?.created === created) return;
    if (current) this.#end(current);
    const reader: Reader = { event, created, ended: false };
    this.#readers.set(event, reader);
    reader.loop = this.#readUntilDropped(reader).finally(() => this.#end(reader));
  }

  async #readUntilDropped(reader: Reader): Promise<void> {
    const { js, manager, logger } = this.#deps;
    const { event } = reader;
    const name = waitConsumerName(event);
    while (!reader.ended) {
      let failure: unknown;
      try {
        const consumer = await js.consumers.get(EVENT_STREAM, name);
        // A consumer dropped under it ends the iteration (at once on NATS 2.10+, after missed heartbeats on 2.9).
        reader.messages = await consumer.consume({ max_messages: BATCH, abort_on_missing_resource: true });
        if (reader.ended) reader.messages.stop();
        for await (const message of reader.messages) this.#take(message);
      } catch (error) {
        failure = error;
      }
      if (reader.ended) return;
      const info = await consumerInfo(manager, EVENT_STREAM, name).catch(() => null);
      // Dropped (nothing waits for these events any more): no longer read here, until a wait watches it again.
      if (info === undefined) return;
      if (failure) logger.warn({ err: failure, event }, "Reading the events that end durable waits failed.");
      if (info) reader.created = info.created;
      await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
    }
  }

  /**
   * Stops a reader. Messages it pulled and had not handed over yet come again after the ack wait
   * (to the consumer's other readers; only ever for a consumer made again or being dropped).
   */
  #end(reader: Reader): void {
    reader.ended = true;
    reader.messages?.stop();
    if (this.#readers.get(reader.event) !== reader) return;
    this.#readers.delete(reader.event);
    this.#unwaitedSince.delete(reader.event); // Counted afresh if this runtime reads it again.
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
    // The matches of one batch commit one by one, and one event may end thousands of waits: every
    // message held (the batch's and those queued behind it) is told `working` while matching goes
    // on, so its ack wait starts again and no other runtime takes it meanwhile. Not once matching
    // made no progress over two ack waits: a match that hangs lets the ack wait free them.
    const ackWaitMs = this.#deps.ackWaitMs ?? ACK_WAIT_MS;
    let held: JsMsg[] = [];
    let seen = this.#matchesDone;
    let progressAt = performance.now();
    const keepAlive = setInterval(() => {
      if (this.#matchesDone !== seen) progressAt = performance.now();
      seen = this.#matchesDone;
      if (performance.now() - progressAt > 2 * ackWaitMs) return;
      for (const message of [...held, ...this.#pending]) {
        try {
          message.working();
        } catch {
          // The connection closed: what is not acked comes again after the ack wait, as it would.
        }
      }
    }, ackWaitMs / 4);
    try {
      while (this.#pending.length > 0) {
        held = this.#pending.splice(0, BATCH);
        await this.#matchBatch(held);
      }
    } finally {
      clearInterval(keepAlive);
    }
  }

  /** Matches a batch and acks it; gives it back while Postgres is away, or tries its events one by one. */
  async #matchBatch(messages: JsMsg[]): Promise<void> {
    let matched = false;
    try {
      await this.match(messages.flatMap((message) => storedEvent(message) ?? []));
      matched = true;
    } catch (error) {
      if (isDatabaseLoss(error)) {
        // Postgres away: every event would fail alone too. Given back whole, they come again.
        this.#deps.logger.warn({ err: error }, "Events could not be matched with durable waits; they come again.");
        for (const message of messages) message.nak(RETRY_MS * Math.min(message.info.deliveryCount, 30));
        return;
      }
      this.#deps.logger.warn({ err: error }, "Events could not be matched with durable waits; trying them one by one.");
      // One by one: an event that fails alone is not allowed to hold back the others.
      for (const message of messages) await this.#matchAlone(message);
    }
    // Outside the try: an ack on a closed connection is no failed match (the flush ends; they come again).
    if (matched) for (const message of messages) message.ack();
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
    const batch = storableJson(events);
    const rows = (await sql.begin(async (tx) => {
      // The planner guesses each CTE level at 100 rows, which crosses jit_above_cost: compiling the
      // statement would cost 15-20 ms a batch, running it 1-4 ms.
      const [, matched] = await Promise.all([tx.unsafe(NO_JIT_SQL), tx.unsafe(MATCH_SQL, [batch], { prepare: true })]);
      return matched;
    })) as unknown as MatchRow[];
    this.#matchesDone++;
    const resolved = new Set<string>();
    for (const row of rows) {
      if (resolved.has(row.invocation_id)) continue;
      const event = events[row.ord - 1] as StoredEvent;
      const ended = await this.#resolve(row, event);
      this.#matchesDone++;
      if (!ended) continue;
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
    // Null when the stream holds no such event; a failure to answer is thrown (the wait is then not marked caught up).
    const last = await manager.streams.getMessage(EVENT_STREAM, { last_by_subj: subject });
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
      if (done) return resolved;
      // Nothing came in a whole pull: finished only if the consumer has nothing left to give.
      if (received === 0 && (await consumer.info()).num_pending === 0) return resolved;
      if (received === 0) throw new Error(`the catch-up of ${lastSeq} events stopped short of them`);
    }
  }

  /**
   * Watches a wait's event name, and catches it up (see catchUp) unless the name's consumer was just
   * made: it starts at the earliest wait's `after_at`. Marked done on the wait's row once both did.
   */
  async catchUpWait(wait: WaitToCatchUp): Promise<number> {
    let made = false;
    let watchFailure: unknown;
    try {
      made = await this.watch(wait.event);
    } catch (error) {
      watchFailure = error; // Caught up all the same; the sweep watches the name again.
    }
    const resolved = made ? 0 : await this.catchUp(wait.event, wait.afterAt);
    // Caught up, whatever the watch did: the sweep watches every waited name again.
    await this.#deps.sql.unsafe(CAUGHT_UP_SQL, [wait.invocationId, wait.key], { prepare: true });
    if (watchFailure) throw watchFailure;
    return resolved;
  }

  /**
   * Reads the consumers of the names steps wait for, catches up the waits whose own catch-up never
   * finished, and drops the consumers of names no step waited for since a minute (any runtime may do
   * any of it; doing one twice is harmless). What fails for one name or wait does not hold back the rest.
   */
  sweep(): Promise<void> {
    this.#sweeping ??= (async () => {
      const listing = this.#sweeps++ % (this.#deps.listingEvery ?? LISTING_EVERY) === 0;
      try {
        const waited = await this.#waitedNames();
        // Each part on its own: one that fails (NATS or Postgres away) does not skip the others.
        await this.#watchAll(waited).catch((error: unknown) => this.#sweepFailed(error));
        await this.#catchUpStragglers().catch((error: unknown) => this.#sweepFailed(error));
        await this.#dropUnwaited(waited);
        if (listing && !this.#stopped) await this.#dropUnread(waited);
      } catch (error) {
        this.#sweepFailed(error);
      } finally {
        this.#sweeping = undefined;
      }
    })();
    return this.#sweeping;
  }

  async #waitedNames(): Promise<Set<string>> {
    const rows = await this.#deps.sql.unsafe(WAITED_NAMES_SQL, [], { prepare: true });
    return new Set(rows.map((row) => row.event as string));
  }

  /**
   * Reads the consumer of every name waited for: made again (from its earliest wait) if it was
   * deleted, and read anew if it was made again since this runtime began reading it.
   */
  async #watchAll(waited: Set<string>): Promise<void> {
    const { manager } = this.#deps;
    if (waited.size === 0) return;
    const stream = await manager.streams.info(EVENT_STREAM);
    const consumers = await lookUpConsumers(manager, EVENT_STREAM, waited.size, stream.state.consumer_count);
    for (const event of waited) {
      if (this.#stopped) return;
      this.#unwaitedSince.delete(event);
      try {
        const info = await consumers.info(waitConsumerName(event));
        if (info && this.#readers.get(event)?.created === info.created) continue;
        await this.watch(event);
      } catch (error) {
        this.#sweepFailed(error, { event });
      }
    }
  }

  async #catchUpStragglers(): Promise<void> {
    const rows = await this.#deps.sql.unsafe(NOT_CAUGHT_UP_SQL, [SWEEP_MS], { prepare: true });
    for (const row of rows) {
      if (this.#stopped) return;
      const afterAt = new Date(row.after_at as string).toISOString();
      await this.catchUpWait({ invocationId: row.invocation_id, key: row.key, event: row.event, afterAt }).catch(
        (error: unknown) => this.#sweepFailed(error, { event: row.event, invocationId: row.invocation_id }),
      );
    }
  }

  /** Drops the consumers this runtime reads of names no step waited for since `idleDropMs`. */
  async #dropUnwaited(waited: Set<string>): Promise<void> {
    for (const event of this.watched) {
      if (this.#stopped) return;
      if (!waited.has(event) && this.#unwaitedLongEnough(event)) {
        await this.#dropIfIdle(event).catch((error: unknown) => this.#sweepFailed(error, { event }));
      }
    }
  }

  /** True once no step waited for `event` over `idleDropMs` (counted from the first sweep that saw it so). */
  #unwaitedLongEnough(event: string): boolean {
    const since = this.#unwaitedSince.get(event);
    if (since === undefined) this.#unwaitedSince.set(event, Date.now());
    return Date.now() - (since ?? Date.now()) >= (this.#deps.idleDropMs ?? IDLE_DROP_MS);
  }

  /**
   * Drops the consumers no runtime here reads of names no step waits for (left by a runtime that
   * stopped before its waits ended), and the version before's shared consumer once two listings in
   * a row found nothing pulling from it and nothing delivered since.
   */
  async #dropUnread(waited: Set<string>): Promise<void> {
    const { manager, logger } = this.#deps;
    const unread: string[] = [];
    let oldSharedIdleAt: number | undefined;
    for await (const info of manager.consumers.list(EVENT_STREAM)) {
      if (info.name === OLD_SHARED_CONSUMER && info.num_waiting === 0) oldSharedIdleAt = info.delivered.stream_seq;
      if (!info.name.startsWith(WAIT_CONSUMER_PREFIX)) continue;
      const event = info.name.slice(WAIT_CONSUMER_PREFIX.length).replaceAll(":", ".");
      if (!waited.has(event) && !this.#readers.has(event)) unread.push(event);
    }
    // A name whose consumer is gone (dropped by another runtime) starts counting afresh if it comes back.
    for (const event of this.#unwaitedSince.keys()) {
      if (!unread.includes(event) && !this.#readers.has(event)) this.#unwaitedSince.delete(event);
    }
    for (const event of unread) {
      if (this.#stopped) return;
      if (this.#unwaitedLongEnough(event)) {
        await this.#dropIfIdle(event).catch((error: unknown) => this.#sweepFailed(error, { event }));
      }
    }
    const confirmed = oldSharedIdleAt !== undefined && oldSharedIdleAt === this.#oldSharedIdleAt;
    this.#oldSharedIdleAt = oldSharedIdleAt;
    if (!confirmed) return;
    try {
      await manager.consumers.delete(EVENT_STREAM, OLD_SHARED_CONSUMER);
      this.#oldSharedIdleAt = undefined;
      logger.info(
        `Dropped the consumer ${OLD_SHARED_CONSUMER} of the version before, which no runtime reads any more.`,
      );
    } catch (error) {
      if (!isNotFound(error)) this.#sweepFailed(error);
    }
  }

  #sweepFailed(error: unknown, about: Record<string, unknown> = {}): void {
    if (!this.#stopped) {
      this.#deps.logger.warn({ err: error, ...about }, "Sweeping durable waits failed; trying again later.");
    }
  }

  /** Commits one match with the resumption it starts; false when the wait no longer waits. */
  async #resolve(row: MatchRow, event: StoredEvent): Promise<boolean> {
    const { sql, resumeSecret, logger } = this.#deps;
    const token = waitMatchToken(row.seq);
    const resumption = resumptionMessage(resumeSecret, {
      fn: row.function,
      id: row.invocation_id,
      token,
      notBefore: Date.now(),
      priority: row.priority ?? undefined,
    });
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
