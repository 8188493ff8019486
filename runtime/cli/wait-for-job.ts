import type { InvocationStatusView } from "../nats/status-api";
import type { JetfnClient } from "../sdk/client";
import { JetfnError } from "../support/errors";
import { progressLine } from "./progress-line";

const POLL_MS = 250;

/**
 * Polls the status of job `id` (of function `fn`, when given) until it ends, drawing its progress on standard
 * error (when it is a terminal), and returns the final status. Throws E_ID_CONFLICT when the id
 * belongs to another function's job.
 */
export async function waitForJob(
  client: JetfnClient,
  id: string,
  timeoutMs: number,
  fn?: string,
): Promise<InvocationStatusView> {
  const started = Date.now();
  const draw = process.stderr.isTTY;
  let shown = false;
  try {
    for (;;) {
      const view = await client.status(id, { function: fn, stream: false });
      if (
        view.status === "succeeded" ||
        view.status === "dead" ||
        view.status === "dropped" ||
        view.status === "cancelled" ||
        view.status === "superseded"
      )
        return view;
      if (draw && view.progress) {
        process.stderr.write(
          `\r${progressLine(view.progress.done, view.progress.total, Date.now() - started)}\u001b[K`,
        );
        shown = true;
      }
      if (Date.now() - started > timeoutMs) {
        throw new JetfnError(
          "E_HANDLER_TIMEOUT",
          `job ${id} is still ${view.status} after ${timeoutMs}ms; it keeps running`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
  } finally {
    if (shown) process.stderr.write("\n");
  }
}
