import type { Logger } from "pino";

/**
 * On the first SIGINT or SIGTERM runs `shutdown` (ordered drain) and exits; a second signal
 * exits at once. Returns a function that removes the handlers.
 */
export function exitOnSignals(shutdown: () => Promise<void>, logger: Logger): () => void {
  let stopping = false;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (stopping) {
      logger.warn({ signal }, "Second signal: exiting now.");
      process.exit(130);
    }
    stopping = true;
    logger.info({ signal }, "Signal received; stopping gracefully (send it again to exit at once).");
    shutdown().then(
      () => process.exit(0),
      (error: unknown) => {
        logger.error({ err: error }, "Shutdown failed.");
        process.exit(1);
      },
    );
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  return () => {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  };
}
