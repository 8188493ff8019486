import pino, { type Logger } from "pino";
import type pinoPretty from "pino-pretty";
import { requireDevDependency } from "./dev-dependencies";

/** Options of the root logger. */
export interface LoggerOptions {
  /** @default "info" */
  level?: string;
  /** `pretty` prints for a terminal (needs pino-pretty, a development-only package); `json` one object per line. @default "json" */
  format?: "pretty" | "json";
  /** Where lines go. @default standard output */
  destination?: NodeJS.WritableStream;
}

/** Field names whose values never reach a log line, at the top of a line or one level down. */
export const SECRET_FIELDS: ReadonlySet<string> = new Set([
  "password",
  "token",
  "secret",
  "authorization",
  "databaseUrl",
]);
const CENSORED = "[redacted]";

/** Creates the process's one root logger. */
export function createLogger(options: LoggerOptions = {}): Logger {
  const settings = {
    level: options.level ?? "info",
    base: { pid: process.pid },
    // Not pino's `redact`: its wildcard paths (`*.password`) cost about 4 µs on every line that
    // logs an object, one per finished job at `info`; this does the same in a fraction of that.
    formatters: { log: withoutSecrets },
    serializers: { err: serializeError },
    // pino formats a child's bindings without the formatters; censor them once made.
    onChild: censorChildBindings,
  };
  if (options.format === "pretty") {
    const destination = options.destination ?? process.stdout;
    // Loaded only here: pino-pretty is a development-only package that production leaves out.
    const prettyStream = requireDevDependency<typeof pinoPretty>("pino-pretty", "readable logs (`jetfn dev`)");
    const stream = prettyStream({
      colorize: (destination as { isTTY?: boolean }).isTTY === true,
      singleLine: true,
      translateTime: "HH:MM:ss.l",
      ignore: "pid,hostname",
      destination,
      sync: true,
    });
    return pino(settings, stream);
  }
  return options.destination ? pino(settings, options.destination) : pino(settings);
}

// A secret field's name as a key anywhere in serialized bindings.
const SECRET_KEY = new RegExp(`"(?:${[...SECRET_FIELDS].join("|")})":`);

/** Rewrites a new child's serialized bindings when they hold a secret field (rare: checked first). */
function censorChildBindings(child: Logger): void {
  const holder = child as unknown as Record<symbol, string>;
  const bindings = holder[pino.symbols.chindingsSym] ?? "";
  if (!SECRET_KEY.test(bindings)) return;
  const censored = JSON.stringify(withoutSecrets(JSON.parse(`{${bindings.slice(1)}}`)));
  holder[pino.symbols.chindingsSym] = `,${censored.slice(1, -1)}`;
}

/**
 * `fields` with every secret field, at its top or one level down, replaced by "[redacted]". The
 * caller's objects are never changed: what holds a secret is copied (an error keeps its class,
 * message and stack); the rest is passed through as it is.
 */
export function withoutSecrets<T extends Record<string, unknown>>(fields: T): T {
  let copy: Record<string, unknown> | undefined;
  for (const key in fields) {
    if (!Object.hasOwn(fields, key)) continue;
    const value = fields[key];
    let replacement: unknown;
    if (SECRET_FIELDS.has(key)) replacement = CENSORED;
    else if (typeof value === "object" && value !== null && !Array.isArray(value)) {
      replacement = censorFields(value as Record<string, unknown>);
    }
    if (replacement !== undefined && replacement !== value) {
      copy ??= copyOf(fields);
      setField(copy, key, replacement);
    }
  }
  return (copy ?? fields) as T;
}

/** `value`, or a copy of it with its own secret fields censored (looked up by name: a big buffer costs nothing). */
function censorFields(value: Record<string, unknown>): Record<string, unknown> {
  let copy: Record<string, unknown> | undefined;
  for (const key of SECRET_FIELDS) {
    if (Object.hasOwn(value, key)) {
      copy ??= copyOf(value);
      setField(copy, key, CENSORED);
    }
  }
  return copy ?? value;
}

/**
 * A shallow copy with the same prototype and every own property (an Error's message and stack too),
 * each of them replaceable, even when the original is frozen. A getter is read on the original:
 * on the copy it may not work (Node 22's `stack` getter reads a slot only real errors have).
 */
function copyOf(value: Record<string, unknown>): Record<string, unknown> {
  const descriptors = Object.getOwnPropertyDescriptors(value);
  for (const [key, descriptor] of Object.entries(descriptors)) {
    const copied =
      descriptor.get || descriptor.set
        ? { value: readField(value, key), enumerable: descriptor.enumerable }
        : descriptor;
    copied.configurable = true;
    copied.writable = true;
    descriptors[key] = copied;
  }
  return Object.create(Object.getPrototypeOf(value), descriptors);
}

/** A field's value, or a marker when reading it throws (a getter of handler code). */
function readField(value: object, key: PropertyKey): unknown {
  try {
    return Reflect.get(value, key);
  } catch {
    return UNREADABLE;
  }
}

const UNREADABLE = "[unreadable: its getter threw]";

/**
 * pino's error serializer, made safe for whatever handler code throws: an error whose getter throws
 * is logged with its type, message and stack instead of making the log call throw.
 */
function serializeError(error: unknown): unknown {
  try {
    return pino.stdSerializers.err(error as Error);
  } catch {
    const text = (key: string): string | undefined => {
      const field = typeof error === "object" && error !== null ? readField(error, key) : undefined;
      return typeof field === "string" ? field : undefined;
    };
    return { type: text("name") ?? "Error", message: text("message") ?? String(typeof error), stack: text("stack") };
  }
}

/** Sets a field of a copy as a plain value, whatever it was (a getter, a read-only field). */
function setField(target: Record<string, unknown>, key: string, value: unknown): void {
  Object.defineProperty(target, key, { value, enumerable: true, writable: true, configurable: true });
}

/**
 * Child logger carried by one invocation: every line names the function, invocation and attempt.
 * Most invocations write no line at all, and a pino child serializes its bindings when it is made,
 * so the child is only made when a line is written at an enabled level.
 */
export function invocationLogger(root: Logger, fn: string, invocationId: string, attempt: number): Logger {
  return lazyChild(root, { fn, invocationId, attempt });
}

const LEVEL_METHODS = new Set(["trace", "debug", "info", "warn", "error", "fatal"]);
const skip = (): void => {};

/** A logger that behaves as `root.child(bindings)`, made on first real use. */
export function lazyChild(root: Logger, bindings: Record<string, unknown>): Logger {
  return new Proxy({ root, bindings, child: undefined } as LazyTarget, LAZY_CHILD) as unknown as Logger;
}

/** What a lazy child holds until it is made. */
interface LazyTarget {
  root: Logger;
  bindings: Record<string, unknown>;
  child: Logger | undefined;
}

// One handler for every lazy child (a logger per invocation, thousands a second): no closures.
const LAZY_CHILD: ProxyHandler<LazyTarget> = {
  get(target, property) {
    if (target.child === undefined && typeof property === "string") {
      if (LEVEL_METHODS.has(property) && !target.root.isLevelEnabled(property)) return skip;
      // Until made, the child's level is its root's: asking for it makes nothing.
      if (property === "isLevelEnabled") return (level: string) => target.root.isLevelEnabled(level);
    }
    target.child ??= target.root.child(target.bindings);
    const logger = target.child;
    const value = Reflect.get(logger, property, logger);
    return typeof value === "function" ? value.bind(logger) : value;
  },
  set(target, property, value) {
    target.child ??= target.root.child(target.bindings);
    return Reflect.set(target.child, property, value);
  },
  has(target, property) {
    return property in (target.child ?? target.root);
  },
};

/** Hides the password in a connection string before it is shown anywhere. */
export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = "redacted";
    return parsed.toString();
  } catch {
    return url.replace(/:\/\/([^:/@]+):[^@]+@/, "://$1:redacted@");
  }
}

/** Hides the passwords in a comma-separated list of server URLs (NATS_URL). */
export function redactUrls(urls: string): string {
  return urls
    .split(",")
    .map((url) => redactUrl(url.trim()))
    .join(",");
}

/**
 * Log fields for a failed invocation: the code always, the stack only when it helps (an error
 * thrown by handler code), so expected refusals stay one short line.
 */
export function failureFields(error: { code: string; cause?: unknown }): Record<string, unknown> {
  const unexpected = error.code === "E_HANDLER_FAILED" || error.code === "E_INTERNAL";
  return unexpected ? { code: error.code, err: error.cause ?? error } : { code: error.code };
}
