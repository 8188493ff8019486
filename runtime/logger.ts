import pino, { type Logger } from "pino";
import pinoPretty from "pino-pretty";

/** Options of the root logger. */
export interface LoggerOptions {
  /** @default "info" */
  level?: string;
  /** `pretty` prints for a terminal; `json` one object per line. @default "json" */
  format?: "pretty" | "json";
  /** Where lines go. @default standard output */
  destination?: NodeJS.WritableStream;
}

/** Field names whose values never reach a log line. */
export const REDACTED_PATHS = [
  "password",
  "*.password",
  "token",
  "*.token",
  "secret",
  "*.secret",
  "authorization",
  "*.authorization",
  "databaseUrl",
  "*.databaseUrl",
];

/** Creates the process's one root logger. */
export function createLogger(options: LoggerOptions = {}): Logger {
  const settings = {
    level: options.level ?? "info",
    base: { pid: process.pid },
    redact: { paths: REDACTED_PATHS, censor: "[redacted]" },
  };
  if (options.format === "pretty") {
    const destination = options.destination ?? process.stdout;
    const stream = pinoPretty({
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

/** Child logger carried by one invocation: every line names the function, invocation and attempt. */
export function invocationLogger(root: Logger, fn: string, invocationId: string, attempt: number): Logger {
  return root.child({ fn, invocationId, attempt });
}

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
