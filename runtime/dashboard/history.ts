import type { RuntimeEmitter } from "../events";

/** Finished and failed invocations of one function per time slot, for the throughput charts. */
export interface FunctionHistory {
  fn: string;
  /** Start of each slot (ms since epoch), oldest first. */
  slots: number[];
  succeeded: number[];
  failed: number[];
}

/** Rolling per-function counts of the last `slots` time slots, fed by the runtime's events. */
export interface InvocationHistory {
  get(fn: string): FunctionHistory;
  close(): void;
}

export const HISTORY_SLOT_MS = 10_000;
export const HISTORY_SLOTS = 60;

/** Starts counting invocations per 10-second slot over the last 10 minutes. */
export function recordInvocationHistory(events: RuntimeEmitter, now: () => number = Date.now): InvocationHistory {
  const counts = new Map<string, Map<number, { succeeded: number; failed: number }>>();
  const slotOf = (time: number) => Math.floor(time / HISTORY_SLOT_MS) * HISTORY_SLOT_MS;
  const bump = (fn: string, key: "succeeded" | "failed"): void => {
    const byFunction = counts.get(fn) ?? new Map();
    counts.set(fn, byFunction);
    const slot = slotOf(now());
    const entry = byFunction.get(slot) ?? { succeeded: 0, failed: 0 };
    entry[key]++;
    byFunction.set(slot, entry);
    for (const old of byFunction.keys()) if (old < slot - HISTORY_SLOTS * HISTORY_SLOT_MS) byFunction.delete(old);
  };
  const onSuccess = (event: { fn: string }) => bump(event.fn, "succeeded");
  const onFailure = (event: { fn: string }) => bump(event.fn, "failed");
  events.on("invocation:success", onSuccess);
  events.on("invocation:failure", onFailure);
  return {
    get(fn) {
      const last = slotOf(now());
      const slots = Array.from(
        { length: HISTORY_SLOTS },
        (_, index) => last - (HISTORY_SLOTS - 1 - index) * HISTORY_SLOT_MS,
      );
      const byFunction = counts.get(fn);
      return {
        fn,
        slots,
        succeeded: slots.map((slot) => byFunction?.get(slot)?.succeeded ?? 0),
        failed: slots.map((slot) => byFunction?.get(slot)?.failed ?? 0),
      };
    },
    close() {
      events.off("invocation:success", onSuccess);
      events.off("invocation:failure", onFailure);
    },
  };
}
