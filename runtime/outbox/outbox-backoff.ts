/**
 * What the outbox relay remembers about rows JetStream refused: how often each was refused and
 * when it may be tried again. A row refused `attempts` times is given up (set aside); until then
 * it waits 1 s, 2 s, 4 s, ... between tries, so a refused row is never retried in a tight loop.
 * Kept in memory: a runtime that takes over the sweep starts counting afresh, which delays the
 * set-aside but never repeats it forever.
 */
export interface OutboxBackoff {
  /** Counts a refusal of the row at `position`; true when it has now been refused `attempts` times. */
  refused(position: number, now: number): boolean;
  /** Forgets a row (published or set aside). */
  forget(position: number): void;
  /** Positions still waiting for their next try, for the sweep to skip. */
  waiting(now: number): number[];
  /** Refusals counted so far for the row at `position`. */
  refusals(position: number): number;
}

/** Tries before a row JetStream keeps refusing is set aside. */
export const DEFAULT_PUBLISH_ATTEMPTS = 4;
const FIRST_DELAY_MS = 1_000;
const MAX_DELAY_MS = 60_000;
/** Rows not refused again for this long (deleted by hand, say) are forgotten. */
const FORGET_AFTER_MS = 10 * 60_000;

interface Refusals {
  count: number;
  retryAt: number;
  lastAt: number;
}

/** Creates an empty back-off record. */
export function createOutboxBackoff(attempts = DEFAULT_PUBLISH_ATTEMPTS): OutboxBackoff {
  const rows = new Map<number, Refusals>();
  return {
    refused(position, now) {
      const count = (rows.get(position)?.count ?? 0) + 1;
      const delay = Math.min(FIRST_DELAY_MS * 2 ** (count - 1), MAX_DELAY_MS);
      rows.set(position, { count, retryAt: now + delay, lastAt: now });
      return count >= attempts;
    },
    forget(position) {
      rows.delete(position);
    },
    waiting(now) {
      const positions: number[] = [];
      for (const [position, entry] of rows) {
        if (now - entry.lastAt > FORGET_AFTER_MS) rows.delete(position);
        else if (entry.retryAt > now) positions.push(position);
      }
      return positions;
    },
    refusals(position) {
      return rows.get(position)?.count ?? 0;
    },
  };
}

/**
 * Delay before the relay's next sweep while publishing fails as a whole (NATS unreachable, the
 * database down): doubles from `intervalMs` up to `maxMs`, back to `intervalMs` on success.
 */
export function nextSweepDelay(previousMs: number, intervalMs: number, maxMs: number): number {
  return Math.min(Math.max(previousMs * 2, intervalMs), maxMs);
}
