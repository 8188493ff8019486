import { jetstream } from "@nats-io/jetstream";
import { type KV, Kvm, type KvWatchEntry } from "@nats-io/kv";
import type { NatsConnection, QueuedIterator } from "@nats-io/transport-node";
import type { Logger } from "pino";
import { JETSTREAM_TIMEOUT_MS } from "./jetstream-timeout";
import { bucketReplication, type Replication, SINGLE_REPLICA, withReplicaHint } from "./stream-replicas";

/**
 * Creates one of jetfn's key-value buckets, or opens it when it exists: one value per key, with the
 * deployment's replicas and placement. `ttl` (ms) ages out entries nobody removed. Runtimes starting
 * together race to create it; the loser's create can be refused ("subjects overlap with an existing
 * stream", seen in CI with two runtimes starting at once), and then it opens the bucket the winner made.
 * A create that failed otherwise (it timed out) is thrown unless the bucket is found to exist.
 */
export async function ensureBucket(
  nc: NatsConnection,
  name: string,
  options: { ttl?: number } = {},
  replication: Replication = SINGLE_REPLICA,
): Promise<KV> {
  try {
    return await withReplicaHint(replication, () =>
      bucketManager(nc).create(name, { history: 1, ...options, ...bucketReplication(replication) }),
    );
  } catch (error) {
    // Opening binds without asking the server: ask whether the winner's bucket is really there.
    const made = await openBucket(nc, name).catch(() => undefined);
    if (made && (await made.status().catch(() => undefined))) return made;
    throw error;
  }
}

/** Opens a bucket another part of jetfn created, without asking the server whether it exists. */
export function openBucket(nc: NatsConnection, name: string): Promise<KV> {
  return bucketManager(nc).open(name);
}

/** Opens and creates buckets whose reads and writes wait JETSTREAM_TIMEOUT_MS for an answer. */
function bucketManager(nc: NatsConnection): Kvm {
  return new Kvm(jetstream(nc, { timeout: JETSTREAM_TIMEOUT_MS }));
}

/** A watch on every key of a bucket; `stop` ends it for good. */
export interface BucketWatch {
  stop(): void;
}

/** Waits before watching again, one step per failure in a row (ms). */
const WATCH_RETRY_MS = [250, 1_000, 5_000];
/** A watch that ran this long was healthy: its failure starts the back-off again. */
const WATCH_STABLE_MS = 30_000;

/**
 * Watches every key of `kv`, calling `onEntry` with each entry and each change, and resolves once
 * the entries that existed are loaded (rejects if the watch fails before). A watch that fails or
 * ends later (nats.js gave up making its consumer again, the server refused its subscription) is
 * started again after a back-off until `stop`: it replays every current entry, so a view built
 * from it is current again. `what` names the watch in logs ("flow-control slots").
 */
export async function watchBucket(
  kv: KV,
  onEntry: (entry: KvWatchEntry) => void,
  logger: Logger,
  what: string,
): Promise<BucketWatch> {
  let stopped = false;
  let watcher: QueuedIterator<KvWatchEntry> | undefined;
  let retry: NodeJS.Timeout | undefined;
  let failures = 0;

  /** Resolves when the watch ends, after `loaded` was called once the existing entries were seen. */
  const follow = async (loaded: () => void): Promise<void> => {
    // Watched first, counted second: an entry written between the two arrives as an update.
    const current = await kv.watch({ key: ">" });
    watcher = current;
    if (stopped) return current.stop();
    if ((await kv.status()).values === 0) loaded();
    for await (const entry of current) {
      try {
        onEntry(entry);
      } catch (error) {
        logger.warn({ err: error, key: entry.key }, `Could not apply an entry of ${what}; skipped it.`);
      }
      if (entry.isUpdate || !entry.delta) loaded();
    }
  };
  const again = (error: unknown, since: number): void => {
    if (stopped) return;
    failures = Date.now() - since >= WATCH_STABLE_MS ? 1 : failures + 1;
    const waitMs = WATCH_RETRY_MS[Math.min(failures, WATCH_RETRY_MS.length) - 1];
    logger.warn({ err: error, retryInMs: waitMs }, `Watching ${what} stopped; watching again.`);
    retry = setTimeout(() => {
      const restarted = Date.now();
      let caughtUp = false;
      const loaded = (): void => {
        if (!caughtUp) logger.info(`Watching ${what} again.`);
        caughtUp = true;
      };
      follow(loaded).then(
        () => again(undefined, restarted),
        (failure: unknown) => again(failure, restarted),
      );
    }, waitMs);
  };

  await new Promise<void>((resolve, reject) => {
    let loaded = false;
    const started = Date.now();
    const ready = (): void => {
      if (!loaded) resolve();
      loaded = true;
    };
    // Before loading, a failure fails the start (which may try again: the watch is stopped, not
    // left running beside the next); after, the watch is made again.
    const ended = (error: unknown): void => {
      if (loaded) {
        again(error, started);
        return;
      }
      watcher?.stop();
      reject(error ?? new Error(`watching ${what} ended before the existing entries were loaded`));
    };
    follow(ready).then(
      () => ended(undefined),
      (error: unknown) => ended(error),
    );
  });
  return {
    stop() {
      stopped = true;
      clearTimeout(retry);
      watcher?.stop();
    },
  };
}
