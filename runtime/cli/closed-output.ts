/**
 * Ends the process quietly (exit 0) when standard output is closed by its reader, as in
 * `jetfn dlq --json | head -1`: the reader has what it wanted, so this is not a failure, and
 * without a listener the write's EPIPE would crash the command with a stack trace.
 */
export function exitQuietlyOnClosedOutput(): void {
  process.stdout.on("error", (error: NodeJS.ErrnoException) => {
    if (error.code === "EPIPE") process.exit(0);
    throw error;
  });
}
