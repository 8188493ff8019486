import type { KV, KvEntry } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { ensureBucket } from "../nats/buckets";
import { type Replication, SINGLE_REPLICA } from "../nats/stream-replicas";
import { type Duration, parseDuration } from "../support/duration";
import { JetfnError } from "../support/errors";

/**
 * Keys of debounced and singleton jobs. Both are claimed in one key-value bucket, `JETFN_JOB_KEYS`,
 * which every runtime shares: `debounce.<function>.<key>` names the newest job of a debounce key,
 * `singleton.<function>.<key>` the job holding a singleton key. Keys come from clients, so they
 * are checked here (length, characters) and stored base64url-encoded: nothing a client sends
 * becomes a subject token or a key-value wildcard.
 */
export const JOB_KEYS_BUCKET = "JETFN_JOB_KEYS";

/** Header of a debounced job naming its key (it travels with the job through the delayed-jobs stream). */
export const DEBOUNCE_KEY_HEADER = "Jetfn-Debounce-Key";
/** Header of a singleton job naming its key. */
export const SINGLETON_KEY_HEADER = "Jetfn-Singleton-Key";
/** Header of a debounce period, in milliseconds (in a keyed enqueue request and a keyed outbox row). */
export const DEBOUNCE_PERIOD_HEADER = "Jetfn-Debounce-Period";
/** Header of a debounce `maxWait`, in milliseconds (in a keyed enqueue request and a keyed outbox row). */
export const DEBOUNCE_MAX_WAIT_HEADER = "Jetfn-Debounce-Max-Wait";

/** Longest key, in characters. */
export const MAX_KEY_LENGTH = 128;
/**
 * Letters, digits and `_ - . : @ / + =`: tenant ids, emails, paths and base64 fit; spaces and
 * control characters do not. `jetfn.outbox_row_problem` (migration 0028) checks the same.
 */
const KEY_PATTERN = /^[A-Za-z0-9_.:@/+=-]+$/;
/** Shortest and longest debounce period. */
export const MIN_DEBOUNCE_MS = 100;
export const MAX_DEBOUNCE_MS = 24 * 3_600_000;
/**
 * How long a claim lives without being written again. A debounce claim is done with once its job is
 * moved (at most a day later); a singleton claim whose job waits longer than this lapses.
 */
const CLAIM_TTL_MS = 7 * 24 * 3_600_000;

/** Whether `value` is a valid debounce or singleton key. */
export function isValidJobKey(value: unknown): value is string {
  return typeof value === "string" && value.length > 0 && value.length <= MAX_KEY_LENGTH && KEY_PATTERN.test(value);
}

/** Checks a debounce or singleton key from a client; throws E_INPUT_INVALID with what is wrong. */
export function checkJobKey(value: unknown, what: "debounce" | "singleton"): string {
  if (!isValidJobKey(value)) {
    const shown = typeof value === "string" ? JSON.stringify(value.slice(0, 40)) : typeof value;
    throw new JetfnError(
      "E_INPUT_INVALID",
      `${what} key ${shown} is not valid: use 1-${MAX_KEY_LENGTH} letters, digits or _ - . : @ / + =`,
    );
  }
  return value;
}

/** Checks a debounce period (`"5s"`, milliseconds); throws E_INPUT_INVALID outside 100 ms - 24 h. */
export function checkDebouncePeriod(value: Duration | undefined): number {
  const ms = debounceDuration(value, "period");
  if (ms < MIN_DEBOUNCE_MS || ms > MAX_DEBOUNCE_MS) {
    throw new JetfnError("E_INPUT_INVALID", `debounce period must be between 100ms and 24h, not ${String(value)}`);
  }
  return ms;
}

/**
 * Checks a debounce `maxWait` (`"5m"`, milliseconds) against its period; throws E_INPUT_INVALID
 * unless it is at least the period and at most 24 h.
 */
export function checkDebounceMaxWait(value: Duration, periodMs: number): number {
  const ms = debounceDuration(value, "maxWait");
  if (ms < periodMs || ms > MAX_DEBOUNCE_MS) {
    throw new JetfnError(
      "E_INPUT_INVALID",
      `debounce maxWait must be between the period (${periodMs}ms) and 24h, not ${String(value)}`,
    );
  }
  return ms;
}

function debounceDuration(value: Duration | undefined, what: string): number {
  let ms: number;
  try {
    ms = parseDuration(value ?? "");
  } catch (error) {
    throw new JetfnError("E_INPUT_INVALID", `debounce ${what}: ${(error as Error).message}`);
  }
  if (!Number.isFinite(ms)) throw new JetfnError("E_INPUT_INVALID", `debounce ${what} must be finite`);
  return ms;
}

/** The bucket key of a claim: `debounce`, `billing.charge`, `tenant:7` -> `debounce.billing.charge.dGVuYW50Ojc`. */
export function claimKey(kind: "debounce" | "singleton", fn: string, key: string): string {
  return `${kind}.${fn}.${Buffer.from(key).toString("base64url")}`;
}

/** Opens (or creates) the claims bucket. */
export function openJobKeys(nc: NatsConnection, replication: Replication = SINGLE_REPLICA): Promise<KV> {
  return ensureBucket(nc, JOB_KEYS_BUCKET, { ttl: CLAIM_TTL_MS }, replication);
}

/**
 * Writes `claim` if the key is still at `entry`'s revision (or still absent, or deleted): its new
 * revision, or undefined when another writer came first.
 */
export async function compareAndSet(
  keys: KV,
  name: string,
  entry: KvEntry | null,
  claim: object,
): Promise<number | undefined> {
  try {
    return entry
      ? await keys.update(name, JSON.stringify(claim), entry.revision)
      : await keys.create(name, JSON.stringify(claim));
  } catch (error) {
    if (isWrongRevision(error)) return undefined;
    throw error;
  }
}

/** The server's answer to a compare-and-set on a stale revision (or a create of a key that exists). */
function isWrongRevision(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return code === 10071 || code === 10164 || /wrong last sequence/i.test(String((error as Error)?.message ?? ""));
}
