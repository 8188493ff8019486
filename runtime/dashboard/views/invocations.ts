import type { AuditEntry } from "../../audit/audit-queries";
import { describeChange } from "../../inspect/audit-format";
import type { InvocationStatusView } from "../../nats/status-api";
import { formatElapsed } from "../../support/duration";
import { html, type SafeHtml } from "../html";
import { signInHint } from "../sign-in";
import { timeCell } from "../time-format";
import { CONFIRM } from "./confirm";
import { refreshScript } from "./live-refresh";

/** A row of the invocations list. */
export interface InvocationRow {
  id: string;
  function: string;
  status: string;
  attempts: number;
  enqueuedAt: string | null;
  finishedAt: string | null;
  durationMs: number | null;
  lastError: string | null;
  /** A delayed job's due time (status `scheduled`). */
  runAt?: string;
}

/** Filters of the invocations list, as typed in the form. */
export interface InvocationFilters {
  function?: string;
  status?: string;
  since?: string;
  id?: string;
  /** Rows of the newest-first list to skip (the pages before this one). */
  offset?: number;
}

/** One page of the list, and whether there are more after it. */
export interface InvocationPage {
  rows: InvocationRow[];
  more: boolean;
  /** Delayed jobs waiting (listed under status `scheduled`), when this page does not show them. */
  scheduled?: number;
}

/**
 * Every status the list can filter by: the records' statuses, delayed jobs waiting (`scheduled`),
 * and `superseded` (a job replaced by a later one of the same key, once flow control records it).
 */
export const INVOCATION_STATUSES: readonly string[] = [
  "queued",
  "scheduled",
  "running",
  "succeeded",
  "failed",
  "dead",
  "dropped",
  "cancelled",
  "superseded",
  "sleeping",
  "awaiting",
];

/** Rows per page of the invocations list. */
export const INVOCATIONS_PAGE_SIZE = 200;

/** An invocation that has not finished (queued, scheduled, running, or failed with attempts left) can be cancelled. */
const CANCELLABLE = new Set(["pending", "queued", "scheduled", "running", "failed", "sleeping", "awaiting"]);

/**
 * The searchable list of invocations, a page at a time. With `problem` (a filter it cannot read),
 * the form keeps what was typed and the reason shows above it, instead of rows.
 */
export function invocationsPage(page: InvocationPage, filters: InvocationFilters, problem?: string): SafeHtml {
  const statuses = ["", ...INVOCATION_STATUSES];
  const { rows } = page;
  if (problem && filters.status && !statuses.includes(filters.status)) statuses.push(filters.status);
  return html`${problem ? html`<p class="notice error filter-error">${problem}</p>` : ""}<form class="filters" method="get">
<input name="id" placeholder="invocation id" value="${filters.id ?? ""}">
<input name="function" placeholder="function" value="${filters.function ?? ""}">
<select name="status">${statuses.map((status) => html`<option value="${status}" ${status === (filters.status ?? "") ? "selected" : ""}>${status || "any status"}</option>`)}</select>
<input name="since" placeholder="since (2h, or a date)" value="${filters.since ?? ""}">
<button>search</button></form>
${page.scheduled ? html`<p class="muted"><a href="/invocations?status=scheduled">${page.scheduled} delayed job(s)</a> waiting for their due time (status scheduled).</p>` : ""}
<table id="invocations"><thead><tr><th>id</th><th>function</th><th>status</th><th>attempts</th><th>enqueued</th><th>took</th><th>last error</th></tr></thead><tbody>
${rows.map(
  (row) => html`<tr><td><a href="/invocations/${row.id}">${row.id}</a></td><td>${row.function}</td>
<td class="status-${row.status}">${row.status}</td><td class="num">${row.attempts}</td><td>${timeCell(row.enqueuedAt)}</td>
<td class="num">${row.runAt ? html`due ${timeCell(row.runAt)}` : row.durationMs === null ? "" : `${row.durationMs} ms`}</td><td>${row.lastError ?? ""}</td></tr>`,
)}</tbody></table>
${rows.length === 0 && !problem ? html`<p class="muted">no invocations match</p>` : ""}
<p class="paging">${pageLinks(page, filters)}</p>`;
}

/** "newer" and "next page" links that keep the filters. */
function pageLinks(page: InvocationPage, filters: InvocationFilters): SafeHtml {
  const offset = filters.offset ?? 0;
  const link = (to: number, text: string, rel: string) => {
    const query = new URLSearchParams();
    for (const key of ["id", "function", "status", "since"] as const) {
      const value = filters[key];
      if (value) query.set(key, value);
    }
    if (to > 0) query.set("offset", String(to));
    return html`<a rel="${rel}" class="${rel}" href="/invocations?${query.toString()}">${text}</a> `;
  };
  const first = offset + 1;
  const last = offset + page.rows.length;
  return html`${page.rows.length ? `rows ${first}–${last} ` : ""}${offset > 0 ? link(Math.max(0, offset - INVOCATIONS_PAGE_SIZE), "newer", "prev") : ""}${page.more ? link(offset + INVOCATIONS_PAGE_SIZE, "next page", "next") : ""}`;
}

/** What the invocation page shows besides the invocation: the sign-in state and an action's outcome. */
export interface InvocationPageContext {
  signedIn: boolean;
  message?: string;
}

/** One invocation: status (live while running), input, result or errors, and its database changes. */
export function invocationPage(
  view: InvocationStatusView,
  changes: Map<string, AuditEntry[]>,
  context: InvocationPageContext,
): SafeHtml {
  return html`${context.message ? html`<p class="notice">${context.message}</p>` : ""}
${CANCELLABLE.has(view.status) ? cancelAction(view.id, context.signedIn) : ""}
${enqueuedWith(view)}<div id="live" data-fragment="/fragments/invocations/${view.id}">${invocationSummary(view)}</div>
${view.status === "running" || view.status === "pending" || view.status === "scheduled" || view.status === "failed" || view.status === "sleeping" || view.status === "awaiting" ? refreshScript(1_000) : ""}
<h2>database changes</h2>${changes.size === 0 ? html`<p class="muted">none recorded (nothing written, or rolled back)</p>` : ""}
${[...changes].map(
  ([table, entries]) =>
    html`<h3>${table} (${entries.length})</h3><table class="changes"><tbody>${entries.map(
      (entry) =>
        html`<tr><td>${entry.operation}</td><td>${JSON.stringify(entry.pk)}</td><td>${describeChange(entry)}</td><td class="muted">attempt ${entry.attempt ?? "–"}${entry.step == null ? "" : ` · step ${entry.step}`}</td></tr>`,
    )}</tbody></table>`,
)}`;
}

/**
 * What the job was enqueued with (priority, debounce or singleton key), when it has any. Outside
 * the live part: it never changes, and a queued job's comes from the stream, read once per page.
 */
function enqueuedWith(view: InvocationStatusView): SafeHtml | string {
  const parts = [
    view.priority ? html`priority <strong class="priority">${view.priority}</strong>` : "",
    view.debounceKey ? html`debounce key <code class="debounce-key">${view.debounceKey}</code>` : "",
    view.singletonKey ? html`singleton key <code class="singleton-key">${view.singletonKey}</code>` : "",
  ].filter((part) => part !== "");
  if (parts.length === 0) return "";
  return html`<p class="enqueued-with">enqueued with ${parts.map((part, index) => html`${index > 0 ? " · " : ""}${part}`)}</p>`;
}

/** The cancel button, or how to sign in for it. */
function cancelAction(id: string, signedIn: boolean): SafeHtml {
  if (!signedIn) return signInHint(`/invocations/${id}`, "cancel this job");
  return html`<form method="post" action="/invocations/${encodeURIComponent(id)}/cancel" data-confirm="Cancel ${id}? It will not run (again)." onsubmit="${CONFIRM}"><button class="cancel">cancel</button></form>`;
}

/** The live part of an invocation's page. */
export function invocationSummary(view: InvocationStatusView): SafeHtml {
  const progress = view.progress
    ? html`<div class="bar" title="${view.progress.done}/${view.progress.total ?? "?"}"><span style="width:${view.progress.total ? Math.min(100, (view.progress.done / view.progress.total) * 100).toFixed(0) : 0}%"></span></div>
<p class="progress">${view.progress.done}${view.progress.total === null ? "" : ` of ${view.progress.total}`}</p>`
    : "";
  const errors = (view.errors ?? []) as {
    attempt: number;
    code: string;
    name: string;
    message: string;
    at: string;
    stack?: string;
    step?: string;
  }[];
  return html`<p>status <strong class="status status-${view.status}">${view.status}</strong>${view.waitingFor ? html` (for its ${view.waitingFor})` : ""} · function ${view.function ?? "?"} · attempts ${view.attempts}</p>
${progress}
<p class="muted">enqueued ${timeCell(view.enqueuedAt)} · started ${timeCell(view.startedAt)} · finished ${timeCell(view.finishedAt)}${view.runAt ? html` · due ${timeCell(view.runAt)}` : ""}${view.wakeAt ? html` · ${view.status === "awaiting" ? "waits until" : "wakes"} ${timeCell(view.wakeAt)}` : ""}${view.retryAt ? html` · retries its step ${timeCell(view.retryAt)}` : ""}${view.retryOf ? html` · retry of <a href="/invocations/${view.retryOf}">${view.retryOf}</a>` : ""}</p>
${view.input === undefined ? "" : html`<h2>input</h2><pre class="input">${JSON.stringify(view.input, null, 2)}</pre>`}
${view.status === "succeeded" ? html`<h2>result</h2><pre class="result">${JSON.stringify(view.result ?? null, null, 2)}</pre>` : ""}
${errors.length ? html`<h2>errors</h2>${errors.map((error) => html`<details><summary>attempt ${error.attempt}${error.step === undefined ? "" : html` of step ${JSON.stringify(error.step)}`}: ${error.code} ${error.name}: ${error.message}</summary><pre>${error.stack ?? ""}</pre></details>`)}` : ""}
${stepsTable(view)}`;
}

/** The invocation's durable steps, in the order first reached (docs/durable-steps.md). */
function stepsTable(view: InvocationStatusView): SafeHtml | string {
  if (!view.steps?.length) return "";
  return html`<h2>steps (${view.steps.length})</h2><table class="steps"><thead><tr><th>#</th><th>step</th><th>kind</th><th>status</th><th>attempt</th><th>finished</th><th>took</th></tr></thead><tbody>${view.steps.map(
    (step) =>
      html`<tr data-step="${step.key}"><td class="num">${step.seq}</td><td><code>${step.key}</code></td><td>${step.kind}</td><td class="status-${step.status}">${step.status}</td><td class="num">${step.attempts}</td><td>${timeCell(step.finishedAt)}</td><td class="num">${formatElapsed(step.startedAt, step.finishedAt) ?? ""}</td></tr>`,
  )}</tbody></table>`;
}
