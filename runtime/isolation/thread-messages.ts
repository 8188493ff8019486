/**
 * What an isolated function's worker thread and the runtime say to each other. Values cross by
 * structured clone; errors cross as plain objects (see serializeError) because a structured clone
 * keeps neither `code` nor `cause`, which the runtime classifies failures by.
 */

import type { LogLimits } from "../support/log-budget";

/** Given to each worker thread at start: which build of which function to load. */
export interface ThreadData {
  file: string;
  functionName: string;
  /** The function file compiled to CommonJS by the loader (the deployed version, not the file on disk). */
  source: string;
  /** What the handler may log per invocation: lines past it are dropped in the thread. */
  logLimits: LogLimits;
  /** Longest the file's top-level code may run in the thread (it loaded in time in the runtime's). */
  loadTimeoutMs?: number;
  /** The app's drizzle schema module, compiled by the runtime, for `ctx.db.query`. */
  schema?: { file: string; source: string };
}

/** An error as it crosses threads: name, message, stack, `cause`, and its primitive own fields. */
export interface SerializedError {
  name: string;
  message: string;
  stack?: string;
  cause?: SerializedError;
  /** Validation issues (E_INPUT_INVALID, E_OUTPUT_INVALID). */
  issues?: unknown[];
  fields: Record<string, string | number | boolean>;
}

/** A relayed query's answer: the rows (objects, or arrays for `.values()`) and postgres.js's summary. */
export interface QueryAnswer {
  rows: unknown[];
  count: number | null;
  command: string | null;
}

/** What a handler in a thread asks the runtime to do for it, answered by a `reply`. */
export type ThreadRequest =
  | { op: "query"; text: string; params: unknown[]; prepare: boolean | undefined; mode: "rows" | "values" }
  | { op: "enqueue" | "call"; functionName: string; input: unknown; options: { id?: string } | undefined }
  | { op: "emit"; event: string; data: unknown };

/** Runtime -> thread. */
export type ToThread =
  | {
      type: "run";
      run: number;
      input: unknown;
      invocationId: string;
      attempt: number;
      logLevel: string;
    }
  | { type: "abort"; run: number; reason: SerializedError }
  | { type: "reply"; call: number; ok: true; value: unknown }
  | { type: "reply"; call: number; ok: false; error: SerializedError };

/** Thread -> runtime. */
export type FromThread =
  | { type: "ready" }
  | { type: "load-failed"; error: SerializedError }
  | { type: "request"; run: number; call: number; request: ThreadRequest }
  | { type: "progress"; run: number; done: number; total: number | undefined }
  | { type: "log"; run: number; line: string }
  | { type: "log-dropped"; run: number; count: number }
  | { type: "done"; run: number; ok: true; value: unknown }
  | { type: "done"; run: number; ok: false; error: SerializedError }
  | { type: "unhandled-rejection"; error: SerializedError };

const MAX_CAUSE_DEPTH = 4;

/** Turns anything thrown into a SerializedError (keeps `code`, `delayMs`, `issues`, driver fields). */
export function serializeError(thrown: unknown, depth = 0): SerializedError {
  if (thrown === null || typeof thrown !== "object") {
    return { name: "Error", message: String(thrown), fields: {} };
  }
  const error = thrown as { name?: unknown; message?: unknown; stack?: unknown; cause?: unknown };
  const fields: SerializedError["fields"] = {};
  for (const [key, value] of Object.entries(thrown)) {
    if (typeof value === "string" || typeof value === "number" || typeof value === "boolean") fields[key] = value;
  }
  const serialized: SerializedError = {
    name: typeof error.name === "string" ? error.name : "Error",
    message: typeof error.message === "string" ? error.message : String(thrown),
    fields,
  };
  if (typeof error.stack === "string") serialized.stack = error.stack;
  const issues = (thrown as { issues?: unknown }).issues;
  if (Array.isArray(issues)) serialized.issues = structuredCloneOrNothing(issues);
  if (error.cause !== undefined && depth < MAX_CAUSE_DEPTH) serialized.cause = serializeError(error.cause, depth + 1);
  return serialized;
}

/** Rebuilds an Error from a SerializedError, with the same name, fields and cause chain. */
export function deserializeError(serialized: SerializedError): Error {
  const error = new Error(serialized.message, serialized.cause ? { cause: deserializeError(serialized.cause) } : {});
  Object.assign(error, serialized.fields);
  error.name = serialized.name;
  if (serialized.issues !== undefined) Object.assign(error, { issues: serialized.issues });
  if (serialized.stack !== undefined) error.stack = serialized.stack;
  return error;
}

function structuredCloneOrNothing(value: unknown[]): unknown[] | undefined {
  try {
    return structuredClone(value);
  } catch {
    return undefined;
  }
}
