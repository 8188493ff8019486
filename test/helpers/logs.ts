import { Writable } from "node:stream";
import type { Logger } from "pino";
import { createLogger } from "../../runtime/support/logger";

/** A JSON logger whose lines the test can read; set TEST_LOGS=1 to also print them. */
export interface CapturedLogger {
  logger: Logger;
  lines: Record<string, unknown>[];
  /** Lines whose message contains `text`. */
  matching(text: string): Record<string, unknown>[];
}

/** Creates a logger that records every line as an object. */
export function captureLogs(level = "debug"): CapturedLogger {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk, _encoding, done) {
      for (const line of String(chunk).split("\n")) {
        if (!line.trim()) continue;
        lines.push(JSON.parse(line) as Record<string, unknown>);
        if (process.env.TEST_LOGS) process.stdout.write(`${line}\n`);
      }
      done();
    },
  });
  const logger = createLogger({ level, format: "json", destination: sink });
  return {
    logger,
    lines,
    matching: (text) => lines.filter((line) => String(line.msg ?? "").includes(text)),
  };
}
