import { EventEmitter } from "node:events";
import type { JetfnError } from "../support/errors";

/** How an invocation was started. */
export type InvocationKind = "call" | "job";

/** Data of every invocation event. */
export interface InvocationEvent {
  fn: string;
  invocationId: string;
  attempt: number;
  kind: InvocationKind;
}

/** Every event the runtime emits; metrics, logs and the dashboard subscribe to these. */
export interface RuntimeEvents {
  "function:loaded": [{ fn: string; file: string; version: number; replaced: boolean }];
  "function:failed": [{ file: string; error: JetfnError }];
  "function:removed": [{ fn: string; file: string }];
  "invocation:start": [InvocationEvent];
  "invocation:success": [InvocationEvent & { durationMs: number }];
  "invocation:failure": [InvocationEvent & { durationMs: number; error: JetfnError; final: boolean }];
  /** A run ended without an outcome: its job sleeps until `wakeAt` (epoch ms), or the run was a stale copy. */
  "invocation:suspended": [InvocationEvent & { durationMs: number; wakeAt: number | undefined }];
  "invocation:progress": [InvocationEvent & { done: number; total: number | undefined }];
  /** A job's outcome is recorded and its message acked (the moment its `jetfn.done.<id>` notice goes out). */
  "job:done": [{ fn: string; invocationId: string; status: "succeeded" | "dead" | "cancelled" }];
  "consumer:stalled": [{ fn: string; reason: string }];
  /**
   * The connection to NATS was lost (the server went away, or answered no pings: a partition) and
   * the runtime is reconnecting; `server` is the one it was connected to.
   */
  "nats:disconnected": [{ server: string }];
  /** The runtime is connected to NATS again, to `server`. */
  "nats:reconnected": [{ server: string }];
  /** A scheduled function's next due time was planned (ISO 8601; null when there is none). */
  "schedule:planned": [{ fn: string; nextDueAt: string | null }];
  /** A job was published for a due time; `duplicate` when another runtime had published it already. */
  "schedule:fired": [{ fn: string; dueAt: string; jobId: string; catchUp: boolean; duplicate: boolean }];
  /**
   * A keyed enqueue (debounce, singleton) was answered at its deadline, before its work ended; emitted
   * once that work has ended. `answered`: what the answer said of the job; `outcome`: what became of it
   * (see flow/enqueue-deadline.ts).
   */
  "enqueue:overran": [
    {
      fn: string;
      invocationId: string;
      answered: "not-stored" | "unknown" | "stored";
      outcome: "not-stored" | "unknown" | "stored";
    },
  ];
  /** The outbox relay published messages (after a commit, or found by its sweep). */
  "outbox:published": [{ count: number; swept: boolean; durationMs: number }];
  /** A request was dropped because its reply subject is not an inbox (`api`: call, status, dlq, discovery). */
  "reply:refused": [{ api: string; subject: string; reply: string }];
  /**
   * The relay moved an outbox row to `jetfn.outbox_set_aside` instead of publishing it: it breaks the
   * outbox rules, or JetStream kept refusing it. `fn` / `invocationId` name the invocation that wrote
   * it (null for apps' rows).
   */
  "outbox:set-aside": [{ id: string; subject: string; reason: string; fn: string | null; invocationId: string | null }];
}

/** Typed event emitter of the runtime. */
export type RuntimeEmitter = EventEmitter<RuntimeEvents>;

/** Creates the emitter a runtime and its parts share. */
export function createEmitter(): RuntimeEmitter {
  const emitter = new EventEmitter<RuntimeEvents>();
  // Many listeners (metrics, dashboard, tests) may subscribe; the default of 10 is a false alarm.
  emitter.setMaxListeners(100);
  return emitter;
}
