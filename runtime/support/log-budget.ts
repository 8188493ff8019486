import type { Logger } from "pino";

/** What one invocation's handler may log; past it, lines are dropped and counted. */
export interface LogLimits {
  /** Lines per invocation. */
  readonly lines: number;
  /** Characters per invocation, counted over messages, field names and values. */
  readonly bytes: number;
  /** Characters per line: longer strings are cut, and fields past it left out, with a marker. */
  readonly lineBytes: number;
}

/** @default 1,000 lines, 1 MiB per invocation, 16 KiB per line */
export const DEFAULT_LOG_LIMITS: LogLimits = Object.freeze({ lines: 1_000, bytes: 1_048_576, lineBytes: 16_384 });

/** Marks where a line was cut. */
export const TRUNCATED = "…[truncated]";

/** How much of its budget one invocation's handler has logged, and how many lines were dropped. */
export class LogBudget {
  readonly limits: LogLimits;
  lines = 0;
  bytes = 0;
  dropped = 0;

  constructor(limits: LogLimits) {
    this.limits = limits;
  }

  /** Whether another line fits; counts it as dropped when not. */
  admits(): boolean {
    if (this.lines < this.limits.lines && this.bytes < this.limits.bytes) return true;
    this.dropped++;
    return false;
  }
}

const LEVEL_METHODS = new Set(["trace", "debug", "info", "warn", "error", "fatal"]);
const MAX_DEPTH = 6;

/**
 * `log` as a handler sees it: every line (its children's too) is cut to the line limit and counted
 * against `budget`; past the budget, lines are dropped before pino formats them, so a handler that
 * floods its log costs the runtime little and writes at most its budget.
 */
export function budgetedLogger(log: Logger, budget: LogBudget): Logger {
  const budgeted = new Proxy(log, {
    get(target, property) {
      const value = Reflect.get(target, property, target);
      if (typeof property === "string" && LEVEL_METHODS.has(property) && typeof value === "function") {
        return (...args: unknown[]) => writeLine(target, property, value as LineWriter, args, budget);
      }
      if (property === "child" && typeof value === "function") {
        return (bindings: Record<string, unknown>, options?: unknown): Logger => {
          const child = (value as (bindings: unknown, options?: unknown) => Logger).call(
            target,
            bounded(bindings, budget.limits.lineBytes).value,
            options,
          );
          return budgetedLogger(child, budget);
        };
      }
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  budgets.set(budgeted, budget);
  return budgeted;
}

const budgets = new WeakMap<Logger, LogBudget>();

/** Adds lines dropped elsewhere (in a handler's worker thread) to the budget of a budgeted logger. */
export function noteDroppedLines(log: Logger | undefined, count: number): void {
  const budget = log === undefined ? undefined : budgets.get(log);
  if (budget && Number.isSafeInteger(count) && count > 0) budget.dropped += count;
}

type LineWriter = (...args: unknown[]) => void;

function writeLine(log: Logger, level: string, method: LineWriter, args: unknown[], budget: LogBudget): void {
  if (!log.isLevelEnabled(level) || !budget.admits()) return;
  let room = budget.limits.lineBytes;
  const cut = args.map((arg) => {
    const part = bounded(arg, room);
    room = Math.max(0, room - part.size);
    return part.value;
  });
  budget.lines++;
  budget.bytes += budget.limits.lineBytes - room;
  method.apply(log, cut);
}

/** A copy of `value` holding at most about `room` characters, with the size it takes. */
export function bounded(value: unknown, room: number, depth = 0): { value: unknown; size: number } {
  if (typeof value === "string") {
    return value.length <= room
      ? { value, size: value.length }
      : { value: `${value.slice(0, room)}${TRUNCATED}`, size: room };
  }
  if (typeof value !== "object" || value === null) return { value, size: 8 };
  if (depth >= MAX_DEPTH || room <= 0) return { value: TRUNCATED, size: TRUNCATED.length };
  if (Array.isArray(value)) return boundedArray(value, room, depth);
  return boundedObject(value as Record<string, unknown>, room, depth);
}

function boundedArray(value: unknown[], room: number, depth: number): { value: unknown; size: number } {
  const copy: unknown[] = [];
  let size = 2;
  for (const item of value) {
    if (size >= room) {
      copy.push(TRUNCATED);
      break;
    }
    const part = bounded(item, room - size, depth + 1);
    copy.push(part.value);
    size += part.size + 1;
  }
  return { value: copy, size };
}

/**
 * Own enumerable fields (and an error's message and stack, which pino reads) within `room`. The
 * copy keeps the prototype, so pino still formats an error as one. Getters are read once, here.
 */
function boundedObject(value: Record<string, unknown>, room: number, depth: number): { value: unknown; size: number } {
  let prototype: object | null;
  let keys: string[];
  try {
    prototype = Object.getPrototypeOf(value);
    keys = Object.keys(value);
  } catch {
    return { value: TRUNCATED, size: TRUNCATED.length };
  }
  // A buffer, a date, a map: small or formatted by pino in a bounded way; kept as it is.
  if (prototype !== Object.prototype && prototype !== null && !(value instanceof Error) && keys.length === 0) {
    return { value, size: 16 };
  }
  if (value instanceof Error)
    keys = ["message", "stack", ...keys.filter((key) => key !== "message" && key !== "stack")];
  const copy: Record<string, unknown> = Object.create(prototype);
  const plain = prototype === Object.prototype || prototype === null;
  let size = 2;
  for (const key of keys) {
    if (size >= room) {
      copy["…"] = TRUNCATED;
      size += TRUNCATED.length;
      break;
    }
    const part = bounded(readField(value, key), room - size - key.length, depth + 1);
    // Assignment is faster, but would set a plain copy's prototype for `__proto__`, and run (or
    // throw on) a class's setters and read-only fields.
    if (plain && key !== "__proto__") copy[key] = part.value;
    else Object.defineProperty(copy, key, { value: part.value, enumerable: true, writable: true, configurable: true });
    size += key.length + part.size + 4;
  }
  return { value: copy, size };
}

function readField(value: Record<string, unknown>, key: string): unknown {
  try {
    return value[key];
  } catch {
    return "[unreadable: its getter threw]";
  }
}
