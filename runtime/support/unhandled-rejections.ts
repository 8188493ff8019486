import type { Logger } from "pino";

/** Stops watching for unhandled rejections. */
export interface RejectionWatch {
  close(): void;
}

/**
 * Keeps the process alive when a promise rejects with no handler: Node 20 would otherwise exit,
 * taking every invocation of every function in this runtime with it. A handler that leaves a
 * promise floating is a bug in that handler, so the rejection is logged as an error (its stack
 * names the function file) and the runtime keeps serving.
 */
export function watchUnhandledRejections(logger: Logger): RejectionWatch {
  const onRejection = (reason: unknown): void => {
    logger.error(
      { err: reason },
      "A promise was rejected and nobody handled it (a handler left a promise floating); the runtime keeps running.",
    );
  };
  process.on("unhandledRejection", onRejection);
  return {
    close() {
      process.off("unhandledRejection", onRejection);
    },
  };
}
