import path from "node:path";
import type { ResolvedFunction } from "../../sdk/define-function";
import { formatDuration } from "../../support/duration";
import { html, type SafeHtml } from "../html";

/**
 * A function's settings as the runtime serving the dashboard deployed it: retry and backoff,
 * timeout, concurrency, schedule, events, isolation, commit, and the flow control jobs can use.
 */
export function functionSettings(name: string, fn: ResolvedFunction | undefined, functionsDir: string): SafeHtml {
  if (!fn) {
    return html`<p class="muted settings-unknown">${name} is not deployed on the runtime serving this dashboard, so its settings are not known here.</p>`;
  }
  const query = encodeURIComponent(name);
  const rows: [string, SafeHtml | string][] = [
    ["description", fn.description || "–"],
    // Relative to the functions folder: the machine's own paths are not the reader's business.
    ["file", html`<code>${path.relative(functionsDir, fn.file)}</code> (version ${fn.version})`],
    [
      "retry",
      `${fn.retry.attempts} attempt(s)${fn.retry.attempts > 1 && fn.retry.backoffMs.length ? `, backoff ${fn.retry.backoffMs.map(formatDuration).join(", ")}` : ""}`,
    ],
    ["timeout", `${formatDuration(fn.timeoutMs)} per attempt`],
    ["concurrency", `${fn.concurrency} at once per runtime process`],
    ["schedule", fn.schedule ? `${fn.schedule.description}, catch-up ${fn.schedule.catchUp}` : "–"],
    [
      "events",
      fn.listen
        ? html`<code>${fn.listen.pattern}</code> (from ${fn.listen.from === "all" ? "every event kept" : "new events"})`
        : "–",
    ],
    [
      "isolation",
      fn.isolation === "thread" ? "thread (a worker thread of its own)" : "none (the runtime's event loop)",
    ],
    ["shared commit", fn.sharedCommit ? "yes (group commit)" : "no (its own transaction)"],
    [
      "delay",
      html`per job (<code>delay</code> or <code>runAt</code> when enqueued): <a href="/invocations?status=scheduled&amp;function=${query}">delayed jobs waiting</a>`,
    ],
    ["cancel", "per job, until it ends (an invocation's page, or jetfn cancel)"],
  ];
  return html`<table class="settings" id="settings"><tbody>${rows.map(
    ([label, value]) => html`<tr data-setting="${label}"><th>${label}</th><td>${value}</td></tr>`,
  )}</tbody></table>`;
}
