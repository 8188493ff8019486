import { resolveConfig } from "../config";
import type { StoredError } from "../db/invocation-store";
import type { InvocationStatusView } from "../nats/status-api";
import { findUnrecordedJob } from "../nats/stored-job";
import { createClient, type JetfnClient } from "../sdk/client";
import { formatElapsed } from "../support/duration";
import { JetfnError } from "../support/errors";
import { printJson } from "./output";
import { waitForJob } from "./wait-for-job";

/** `jetfn status <id>`: status, attempts, progress, result or errors. */
export async function statusCommand(id: string, options: { json?: boolean; watch?: boolean }): Promise<void> {
  const client = await createClient();
  try {
    const first = await knownStatus(client, id);
    // Watched to its end, then shown whole, with its steps.
    const view = options.watch
      ? await waitForJob(client, id, Number.MAX_SAFE_INTEGER).then(() => client.status(id, { steps: true }))
      : first;
    if (options.json) printJson(view);
    else process.stdout.write(describeStatus(view));
  } finally {
    await client.close();
  }
}

/**
 * The status of an id some runtime or the stream knows. `pending` alone cannot tell a job waiting
 * in the stream (just enqueued, or for a function no runtime deploys) from a mistyped id, so the
 * stream is asked; an id in neither is E_NOT_FOUND. A job found there shows its priority and keys
 * from its message (no record has them yet). The runtime answering the status reads the stream
 * itself when it has a turn free, and then names the job's function; otherwise this reads it.
 */
async function knownStatus(client: JetfnClient, id: string): Promise<InvocationStatusView> {
  const view = await client.status(id, { steps: true });
  if (view.status !== "pending" || view.function !== null) return view;
  // An application's NATS user may not read the stream: then `pending` is all that can be said.
  const stored = await findUnrecordedJob(client.connection, resolveConfig().streamName, id).catch(() => undefined);
  if (stored) return { ...view, ...stored.labels };
  if (stored === undefined) return view;
  // The job may have been recorded (and acknowledged) while the stream was read.
  const again = await client.status(id, { steps: true });
  if (again.status !== "pending") return again;
  throw new JetfnError(
    "E_NOT_FOUND",
    `no invocation ${id}: no runtime recorded it and the jobs stream does not hold it`,
  );
}

/** A person-readable account of an invocation. */
export function describeStatus(view: InvocationStatusView): string {
  const lines = [`${view.id}  ${view.status}${view.function ? `  ${view.function}` : ""}`];
  if (view.status === "pending") lines.push("not started yet: waiting in the jobs stream");
  if (view.status === "scheduled" && view.runAt) lines.push(`runs at: ${view.runAt}`);
  if (view.status === "sleeping" && view.wakeAt) lines.push(`wakes at: ${view.wakeAt}`);
  if (view.status === "awaiting") {
    const wait = view.steps?.find((step) => step.kind === "wait" && step.status === "waiting");
    lines.push(`waits for event: ${wait?.event ?? "?"}${view.wakeAt ? ` until ${view.wakeAt}` : ""}`);
  }
  if (view.status === "failed" && view.retryAt) lines.push(`retries its step at: ${view.retryAt}`);
  if (view.status === "waiting") lines.push(`not started yet: waiting for its ${view.waitingFor ?? "limit"}`);
  if (view.priority) lines.push(`priority: ${view.priority}`);
  if (view.debounceKey) lines.push(`debounce key: ${JSON.stringify(view.debounceKey)}`);
  if (view.singletonKey) lines.push(`singleton key: ${JSON.stringify(view.singletonKey)}`);
  lines.push(`attempts: ${view.attempts}`);
  if (view.progress)
    lines.push(`progress: ${view.progress.done}${view.progress.total === null ? "" : `/${view.progress.total}`}`);
  const took = formatElapsed(view.startedAt, view.finishedAt);
  if (took) lines.push(`took: ${took} (last attempt)`);
  if (view.status === "succeeded") lines.push(`result: ${JSON.stringify(view.result)}`);
  if (view.retryOf) lines.push(`retry of: ${view.retryOf}`);
  if (view.retriedAs) lines.push(`retried as: ${view.retriedAs} (${view.retriedAt})`);
  if (view.droppedAt) lines.push(`dropped: ${view.droppedAt}`);
  for (const error of (view.errors ?? []) as StoredError[]) {
    const of = error.step === undefined ? "" : ` of step ${JSON.stringify(error.step)}`;
    lines.push(`attempt ${error.attempt}${of}: ${error.code} ${error.name}: ${error.message}`);
  }
  if (view.steps?.length) {
    lines.push(`steps: ${view.steps.length}`);
    const width = Math.max(...view.steps.map((step) => step.key.length));
    for (const step of view.steps) {
      const took = formatElapsed(step.startedAt, step.finishedAt);
      lines.push(
        `  ${step.seq} ${step.key.padEnd(width)}  ${step.kind}  ${step.status}  attempt ${step.attempts}  ${step.finishedAt ?? ""}${took ? `  ${took}` : ""}`,
      );
    }
  }
  return `${lines.join("\n")}\n`;
}
