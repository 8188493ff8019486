import { createClient } from "../client";
import { formatDuration } from "../duration";
import type { InvocationStatusView } from "../nats/status-api";
import { printJson } from "./output";
import { waitForJob } from "./wait-for-job";

/** `jetfn status <id>`: status, attempts, progress, result or errors. */
export async function statusCommand(id: string, options: { json?: boolean; watch?: boolean }): Promise<void> {
  const client = await createClient();
  try {
    const view = options.watch ? await waitForJob(client, id, Number.MAX_SAFE_INTEGER) : await client.status(id);
    if (options.json) printJson(view);
    else process.stdout.write(describeStatus(view));
  } finally {
    await client.close();
  }
}

/** A person-readable account of an invocation. */
export function describeStatus(view: InvocationStatusView): string {
  const lines = [`${view.id}  ${view.status}${view.function ? `  ${view.function}` : ""}`];
  if (view.status === "pending") lines.push("not started yet (or no runtime has seen this id)");
  if (view.status === "scheduled" && view.runAt) lines.push(`runs at: ${view.runAt}`);
  lines.push(`attempts: ${view.attempts}`);
  if (view.progress)
    lines.push(`progress: ${view.progress.done}${view.progress.total === null ? "" : `/${view.progress.total}`}`);
  if (view.startedAt && view.finishedAt) {
    lines.push(`took: ${formatDuration(Date.parse(view.finishedAt) - Date.parse(view.startedAt))} (last attempt)`);
  }
  if (view.status === "succeeded") lines.push(`result: ${JSON.stringify(view.result)}`);
  if (view.retryOf) lines.push(`retry of: ${view.retryOf}`);
  if (view.retriedAs) lines.push(`retried as: ${view.retriedAs} (${view.retriedAt})`);
  if (view.droppedAt) lines.push(`dropped: ${view.droppedAt}`);
  for (const error of (view.errors ?? []) as { attempt: number; code: string; name: string; message: string }[]) {
    lines.push(`attempt ${error.attempt}: ${error.code} ${error.name}: ${error.message}`);
  }
  return `${lines.join("\n")}\n`;
}
