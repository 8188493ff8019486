import { JetStreamApiCodes } from "@nats-io/jetstream";
import type { KV, KvEntry } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import type { Logger } from "pino";
import { JetfnError } from "../support/errors";
import { ensureBucket } from "./buckets";
import { type Replication, SINGLE_REPLICA } from "./stream-replicas";

/**
 * The key-value bucket that records, per function, the newest definition applied to its durable
 * consumer: when that definition was written and the consumer settings it maps to, or (for a
 * listener) that it stopped listening. Runtimes of two versions share one consumer during a rolling
 * deploy; this is how the newer definition stays in force when a runtime of the older one starts or
 * recreates the consumer, and how a consumer a newer version deleted is not created again.
 */
export const DEFINITIONS_BUCKET = "JETFN_DEFINITIONS";

/** The settings of a durable consumer that follow from a function's definition. */
export interface ConsumerSettings {
  /** Nanoseconds, as JetStream takes it. */
  readonly ack_wait: number;
  readonly max_deliver: number;
  readonly max_ack_pending: number;
  readonly description: string;
  /** A listener's pattern as a subject (its `on`); a job consumer's filter is fixed by its name. */
  readonly filter_subject?: string;
  /** Where a listener's consumer starts when it is created (its `onFrom`). */
  readonly deliver_policy?: string;
}

/** Which of a function's consumers a definition is for: its jobs, or its events (`on`). */
export type ConsumerKind = "jobs" | "events";

/** One function's definition as it bears on its consumer. */
export interface ConsumerDefinition {
  /** When the definition was written: ms since the epoch (its files' newest modification time). */
  readonly definedAt: number;
  readonly settings: ConsumerSettings;
}

/** What the bucket may hold besides a definition: since `definedAt` the function wants no such consumer. */
export interface Withdrawal {
  readonly definedAt: number;
  readonly settings: null;
}

export type Recorded = ConsumerDefinition | Withdrawal;

/** What a runtime's definition came to. */
export interface SettledDefinition {
  /**
   * The settings now in force on the consumer (this runtime's, or a newer definition's); when
   * `withdrawn`, this runtime's own, applied to nothing.
   */
  readonly settings: ConsumerSettings;
  /** True when a newer definition of another runtime is in force instead of this runtime's. */
  readonly newerInForce: boolean;
  /**
   * True when a newer definition wants no consumer (a listener that stopped listening): nothing was
   * applied, and the caller deletes the consumer rather than keep or create it.
   */
  readonly withdrawn: boolean;
  /** When the definition in force was written. */
  readonly definedAt: number;
}

/** What {@link ConsumerDefinitions.withdraw} found: recorded now, recorded before, or a newer definition in force. */
export type WithdrawalOutcome = "withdrawn" | "already" | "newer";

/** Rounds of read, compare-and-set and apply before giving up (each lost round means another runtime wrote). */
const MAX_ROUNDS = 10;

/** The definitions of every function's consumer, shared by all runtimes through NATS. */
export interface ConsumerDefinitions {
  /**
   * Decides which definition the consumer of `fn` gets, newest first, and applies it with `apply`:
   * `mine` when no definition is recorded, when mine was written later, or when both were written at
   * the same moment and differ (the runtime started last wins such a tie, as a configuration change
   * needs); otherwise the recorded, newer one. The record is changed by compare-and-set, and the
   * consumer is written again if the record moved meanwhile, so two runtimes starting together end
   * with the newer definition.
   */
  settle(
    fn: string,
    mine: ConsumerDefinition,
    apply: (settings: ConsumerSettings) => Promise<void>,
    kind?: ConsumerKind,
  ): Promise<SettledDefinition>;
  /**
   * Records that `fn`, as defined at `definedAt`, wants no consumer of `kind` (a function that stops
   * listening), unless a newer definition is recorded ("newer": its consumer stays). The caller
   * deletes the consumer after "withdrawn"; older runtimes then find the withdrawal in force and do
   * not create it again.
   */
  withdraw(fn: string, definedAt: number, kind?: ConsumerKind): Promise<WithdrawalOutcome>;
  /** The functions with anything recorded for `kind` (one listing of the bucket's keys). */
  recordedFunctions(kind: ConsumerKind): Promise<Set<string>>;
}

/** Opens the definitions bucket, or creates it with `replication`. */
export async function openConsumerDefinitions(
  nc: NatsConnection,
  logger: Logger,
  replication: Replication = SINGLE_REPLICA,
): Promise<ConsumerDefinitions> {
  const kv = await ensureBucket(nc, DEFINITIONS_BUCKET, {}, replication);
  return new KvConsumerDefinitions(kv, logger);
}

class KvConsumerDefinitions implements ConsumerDefinitions {
  readonly #kv: KV;
  readonly #logger: Logger;

  constructor(kv: KV, logger: Logger) {
    this.#kv = kv;
    this.#logger = logger;
  }

  // Keys are `<kind>.<function name>`: function names are valid key tokens (letters, digits, `-`, `_`, `.`).
  async settle(
    fn: string,
    mine: ConsumerDefinition,
    apply: (settings: ConsumerSettings) => Promise<void>,
    kind: ConsumerKind = "jobs",
  ): Promise<SettledDefinition> {
    const key = `${kind}.${fn}`;
    // Once another runtime wrote while this one settled, a tie goes to the record: two runtimes
    // started together with equal stamps and different settings must not take turns for ever.
    let contested = false;
    for (let round = 0; round < MAX_ROUNDS; round++, contested = true) {
      const entry = await this.#kv.get(key);
      const recorded = readRecorded(entry);
      let inForce: Recorded;
      let revision: number;
      if (recorded === undefined || supersedes(mine, recorded, !contested)) {
        const written = await this.#record(key, mine, entry);
        if (written === undefined) continue;
        [inForce, revision] = [mine, written];
      } else {
        [inForce, revision] = [recorded, (entry as KvEntry).revision];
      }
      if (inForce.settings === null) {
        this.#logger.warn(
          {
            fn,
            kind,
            definedAt: new Date(mine.definedAt).toISOString(),
            inForce: new Date(inForce.definedAt).toISOString(),
          },
          `A newer definition of ${fn} has no ${kind} consumer; this runtime's older one does not create it.`,
        );
        return { settings: mine.settings, newerInForce: true, withdrawn: true, definedAt: inForce.definedAt };
      }
      await apply(inForce.settings);
      // Another runtime recorded a definition while this one applied: apply again from its record.
      if ((await this.#kv.get(key))?.revision !== revision) continue;
      const newerInForce = inForce !== mine && !sameSettings(inForce.settings, mine.settings);
      if (newerInForce) {
        this.#logger.info(
          { fn, definedAt: new Date(mine.definedAt).toISOString(), inForce: new Date(inForce.definedAt).toISOString() },
          `A newer definition of ${fn} sets its consumer; this runtime's older one does not replace it.`,
        );
      }
      return { settings: inForce.settings, newerInForce, withdrawn: false, definedAt: inForce.definedAt };
    }
    throw changingUnder(fn);
  }

  async withdraw(fn: string, definedAt: number, kind: ConsumerKind = "events"): Promise<WithdrawalOutcome> {
    const key = `${kind}.${fn}`;
    const mine: Withdrawal = { definedAt, settings: null };
    for (let round = 0; round < MAX_ROUNDS; round++) {
      const entry = await this.#kv.get(key);
      const recorded = readRecorded(entry);
      if (recorded !== undefined && !supersedes(mine, recorded))
        return recorded.settings === null ? "already" : "newer";
      if ((await this.#record(key, mine, entry)) !== undefined) return "withdrawn";
    }
    throw changingUnder(fn);
  }

  async recordedFunctions(kind: ConsumerKind): Promise<Set<string>> {
    const names = new Set<string>();
    const prefix = `${kind}.`;
    for await (const key of await this.#kv.keys(`${prefix}>`)) names.add(key.slice(prefix.length));
    return names;
  }

  /** Compare-and-set of the record; undefined when another runtime wrote first. */
  async #record(key: string, definition: Recorded, entry: KvEntry | null): Promise<number | undefined> {
    const value = JSON.stringify(definition);
    try {
      return entry ? await this.#kv.update(key, value, entry.revision) : await this.#kv.create(key, value);
    } catch (error) {
      if (isWrongLastSequence(error)) return undefined;
      throw error;
    }
  }
}

/** The server refused a compare-and-set: the key's revision is no longer the one read. */
function isWrongLastSequence(error: unknown): boolean {
  const code = (error as { code?: unknown }).code;
  return (
    code === JetStreamApiCodes.StreamWrongLastSequence || code === JetStreamApiCodes.StreamWrongLastSequenceUnknown
  );
}

function changingUnder(fn: string): JetfnError {
  return new JetfnError(
    "E_UNAVAILABLE",
    `the consumer definition of ${fn} kept changing under this runtime (${MAX_ROUNDS} rounds)`,
  );
}

function readRecorded(entry: KvEntry | null): Recorded | undefined {
  if (entry?.operation !== "PUT" || entry.length === 0) return undefined;
  try {
    const value = entry.json<Recorded>();
    // typeof null is "object" too: a withdrawal reads as one.
    return Number.isFinite(value.definedAt) && typeof value.settings === "object" ? value : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Whether `mine` replaces `recorded`: written later, or (when `winsTie`) at the same moment with
 * other settings, as after a change of configuration (JETFN_MAX_ACK_WAIT) with the same files. A
 * withdrawal is never replaced by a definition of its own date: two versions dated alike (files
 * deployed with one fixed date) would otherwise take turns, and each turn of the one that listens
 * makes the consumer anew, starting per onFrom.
 */
export function supersedes(mine: Recorded, recorded: Recorded, winsTie = true): boolean {
  if (mine.definedAt !== recorded.definedAt) return mine.definedAt > recorded.definedAt;
  if (recorded.settings === null) return false;
  return winsTie && !sameSettings(mine.settings, recorded.settings);
}

function sameSettings(a: ConsumerSettings | null, b: ConsumerSettings | null): boolean {
  if (a === null || b === null) return a === b;
  return (
    a.ack_wait === b.ack_wait &&
    a.max_deliver === b.max_deliver &&
    a.max_ack_pending === b.max_ack_pending &&
    a.description === b.description &&
    a.filter_subject === b.filter_subject &&
    a.deliver_policy === b.deliver_policy
  );
}
