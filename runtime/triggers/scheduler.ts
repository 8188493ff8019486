import type { KV, KvEntry } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import type { Logger } from "pino";
import { ensureBucket, openBucket } from "../nats/buckets";
import type { JetStreamPublisher } from "../nats/stream-publisher";
import type { Replication } from "../nats/stream-replicas";
import { jobMessage, publishMessage } from "../outbox/outbox-message";
import type { ResolvedFunction } from "../sdk/define-function";
import type { RuntimeEmitter } from "./events";
import { dueTimesBetween, MAX_CATCH_UP, type ResolvedSchedule } from "./schedule";
import { SCHEDULE_SECRET_KEY, scheduledJobId, scheduleSecret } from "./scheduled-job-id";

/**
 * Key-value bucket remembering, per scheduled function, the last due time fired and the next one
 * (and, under `Secret`, the key that makes scheduled job ids unpredictable to clients).
 */
export const SCHEDULE_BUCKET = "JETFN_SCHEDULES";

/** One scheduled function as `jetfn ls` shows it (also what the bucket holds, per function). */
export interface ScheduleView {
  fn: string;
  /** `cron 30 8 * * * (Europe/Paris)` or `every 5m`. */
  schedule: string;
  /** The last due time a job was published for (or skipped per `catchUp`), ISO 8601. */
  lastDueAt: string;
  /** The next due time, ISO 8601; null when the schedule has no further due time. */
  nextDueAt: string | null;
}

/** Publishes one job per due time of every scheduled function, however many runtimes run. */
export interface Scheduler {
  /** Starts (or re-plans) a function's schedule; a function without one is removed. */
  set(fn: ResolvedFunction): void;
  remove(name: string): void;
  /** The next due time this runtime has planned for `name`. */
  nextDue(name: string): Date | undefined;
  list(): ScheduleView[];
  /** The secret every runtime shares for ids clients must not predict (scheduled runs, woken jobs). */
  readonly secret: string;
  close(): Promise<void>;
}

/** What the scheduler needs from the runtime. */
export interface SchedulerOptions {
  nc: NatsConnection;
  /** Publishes to JetStream and waits for the stored acknowledgement. */
  js: JetStreamPublisher;
  events: RuntimeEmitter;
  logger: Logger;
  /** Replicas and placement the schedules bucket is created with. */
  replication: Replication;
}

/** Longest a timer sleeps before re-planning (clocks drift, timers cap at ~24 days). */
const MAX_SLEEP_MS = 3_600_000;
/** Wait before trying a tick again after NATS failed. */
const RETRY_MS = 5_000;

/** Opens the schedule bucket and returns a scheduler with nothing planned yet. */
export async function startScheduler(options: SchedulerOptions): Promise<Scheduler> {
  const kv = await ensureBucket(options.nc, SCHEDULE_BUCKET, {}, options.replication);
  return new KvScheduler(options, kv, await scheduleSecret(kv));
}

/** Reads every scheduled function's last and next due time from the bucket (from any process). */
export async function readSchedules(nc: NatsConnection): Promise<ScheduleView[]> {
  const kv = await openBucket(nc, SCHEDULE_BUCKET).catch(() => undefined);
  if (!kv) return [];
  const views: ScheduleView[] = [];
  for await (const key of await kv.keys()) {
    if (key === SCHEDULE_SECRET_KEY) continue;
    const entry = await kv.get(key);
    const view = entry && entry.operation === "PUT" ? parseView(entry) : undefined;
    if (view) views.push(view);
  }
  return views.sort((a, b) => a.fn.localeCompare(b.fn));
}

interface Planned {
  fn: ResolvedFunction;
  schedule: ResolvedSchedule;
  timer: NodeJS.Timeout | undefined;
  next: number | undefined;
  last: number | undefined;
  /** Since when this runtime has been watching the schedule: earlier due times were missed. */
  since: number;
  ticking: Promise<void>;
}

class KvScheduler implements Scheduler {
  readonly #options: SchedulerOptions;
  readonly #kv: KV;
  readonly secret: string;
  readonly #planned = new Map<string, Planned>();
  #closed = false;

  constructor(options: SchedulerOptions, kv: KV, secret: string) {
    this.#options = options;
    this.#kv = kv;
    this.secret = secret;
  }

  set(fn: ResolvedFunction): void {
    if (!fn.schedule) {
      this.remove(fn.name);
      return;
    }
    const existing = this.#planned.get(fn.name);
    if (existing) clearTimeout(existing.timer);
    const planned: Planned = {
      fn,
      schedule: fn.schedule,
      timer: undefined,
      next: undefined,
      last: existing?.last,
      since: existing?.since ?? Date.now(),
      ticking: existing?.ticking ?? Promise.resolve(),
    };
    this.#planned.set(fn.name, planned);
    // The first tick catches up on what was missed while no runtime ran.
    this.#enqueueTick(planned);
  }

  remove(name: string): void {
    const planned = this.#planned.get(name);
    if (!planned) return;
    clearTimeout(planned.timer);
    this.#planned.delete(name);
  }

  nextDue(name: string): Date | undefined {
    const next = this.#planned.get(name)?.next;
    return next === undefined ? undefined : new Date(next);
  }

  list(): ScheduleView[] {
    return [...this.#planned.values()]
      .map((planned) => ({
        fn: planned.fn.name,
        schedule: planned.schedule.description,
        lastDueAt: planned.last === undefined ? "" : new Date(planned.last).toISOString(),
        nextDueAt: planned.next === undefined ? null : new Date(planned.next).toISOString(),
      }))
      .sort((a, b) => a.fn.localeCompare(b.fn));
  }

  async close(): Promise<void> {
    this.#closed = true;
    const ticking = [...this.#planned.values()].map((planned) => planned.ticking);
    for (const planned of this.#planned.values()) clearTimeout(planned.timer);
    this.#planned.clear();
    await Promise.allSettled(ticking);
  }

  #enqueueTick(planned: Planned): void {
    planned.ticking = planned.ticking.then(() => this.#tick(planned));
  }

  async #tick(planned: Planned): Promise<void> {
    if (this.#closed || this.#planned.get(planned.fn.name) !== planned) return;
    try {
      await this.#fireDue(planned, Date.now());
      this.#plan(planned, Date.now());
    } catch (error) {
      this.#options.logger.warn(
        { err: error, fn: planned.fn.name },
        "Could not publish the scheduled job; trying again shortly.",
      );
      this.#sleep(planned, RETRY_MS);
    }
  }

  /** Publishes the due times in (last fired, now] that the catch-up policy keeps, then records the newest. */
  async #fireDue(planned: Planned, now: number): Promise<void> {
    const { fn, schedule } = planned;
    const entry = await this.#kv.get(fn.name);
    const stored = entry && entry.operation === "PUT" ? parseView(entry) : undefined;
    if (!entry || !stored) {
      // Deployed for the first time: nothing was missed; count from now.
      await this.#remember(planned, now, entry?.revision).catch(() => undefined);
      return;
    }
    const last = Date.parse(stored.lastDueAt);
    const due = dueTimesBetween(schedule, last, now, schedule.catchUp === "all" ? MAX_CATCH_UP : 1);
    planned.last = last;
    if (due.length === 0) return;
    const newest = due[due.length - 1] as number;
    // Due while this runtime was watching: a regular tick (or another runtime was slow), not a catch-up.
    const onTime = newest >= planned.since;
    const fire = schedule.catchUp === "all" ? due : schedule.catchUp === "latest" || onTime ? [newest] : [];
    if (fire.length < due.length || !onTime) {
      this.#options.logger.info(
        { fn: fn.name, catchUp: schedule.catchUp, firing: fire.length, since: stored.lastDueAt },
        "Catching up on due times missed while no runtime ran.",
      );
    }
    for (const dueAt of fire) await this.#publish(fn, dueAt, !(onTime && dueAt === newest));
    await this.#remember(planned, newest, entry.revision);
  }

  async #publish(fn: ResolvedFunction, dueAt: number, catchUp: boolean): Promise<void> {
    const due = new Date(dueAt);
    // The id (and so the Nats-Msg-Id) is the same in every runtime, and unknown to clients.
    const jobId = scheduledJobId(fn.name, due, this.secret);
    const message = jobMessage(fn.name, fn.scheduleInput, jobId, this.#options.nc.info?.max_payload);
    const ack = await publishMessage(this.#options.js, message);
    this.#options.events.emit("schedule:fired", {
      fn: fn.name,
      dueAt: due.toISOString(),
      jobId,
      catchUp,
      duplicate: ack.duplicate,
    });
    if (!ack.duplicate) {
      this.#options.logger.info({ fn: fn.name, dueAt: due.toISOString(), jobId, catchUp }, "Scheduled job published.");
    }
  }

  /**
   * Records the newest due time handled. Optimistic: if another runtime recorded one meanwhile, the
   * update is refused and theirs stands (both published the same message ids, so JetStream kept one).
   */
  async #remember(planned: Planned, dueAt: number, revision: number | undefined): Promise<void> {
    const next = planned.schedule.nextAfter(Math.max(dueAt, Date.now()));
    const view: ScheduleView = {
      fn: planned.fn.name,
      schedule: planned.schedule.description,
      lastDueAt: new Date(dueAt).toISOString(),
      nextDueAt: next === undefined ? null : new Date(next).toISOString(),
    };
    planned.last = dueAt;
    try {
      if (revision === undefined) await this.#kv.create(planned.fn.name, JSON.stringify(view));
      else await this.#kv.update(planned.fn.name, JSON.stringify(view), revision);
    } catch (error) {
      this.#options.logger.debug({ err: error, fn: planned.fn.name }, "Another runtime recorded this due time first.");
    }
  }

  #plan(planned: Planned, now: number): void {
    planned.next = planned.schedule.nextAfter(now);
    this.#options.events.emit("schedule:planned", {
      fn: planned.fn.name,
      nextDueAt: planned.next === undefined ? null : new Date(planned.next).toISOString(),
    });
    if (planned.next !== undefined) this.#sleep(planned, planned.next - now);
  }

  #sleep(planned: Planned, ms: number): void {
    if (this.#closed || this.#planned.get(planned.fn.name) !== planned) return;
    clearTimeout(planned.timer);
    const delay = Math.max(0, Math.min(ms, MAX_SLEEP_MS));
    planned.timer = setTimeout(() => this.#enqueueTick(planned), delay);
    planned.timer.unref();
  }
}

function parseView(entry: KvEntry): ScheduleView | undefined {
  try {
    const view = entry.json<ScheduleView>();
    return typeof view.lastDueAt === "string" && Number.isFinite(Date.parse(view.lastDueAt)) ? view : undefined;
  } catch {
    return undefined;
  }
}
