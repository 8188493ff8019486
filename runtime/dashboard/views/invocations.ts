import type { AuditEntry } from "../../audit-queries";
import { describeChange } from "../../cli/audit-format";
import type { InvocationStatusView } from "../../nats/status-api";
import { html, type SafeHtml } from "../html";
import { refreshScript } from "./functions";

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
}

/** Filters of the invocations list, as typed in the form. */
export interface InvocationFilters {
  function?: string;
  status?: string;
  since?: string;
  id?: string;
}

/** The searchable list of invocations. */
export function invocationsPage(rows: InvocationRow[], filters: InvocationFilters): SafeHtml {
  const statuses = ["", "succeeded", "failed", "dead", "dropped"];
  return html`<form class="filters" method="get">
<input name="id" placeholder="invocation id" value="${filters.id ?? ""}">
<input name="function" placeholder="function" value="${filters.function ?? ""}">
<select name="status">${statuses.map((status) => html`<option value="${status}" ${status === (filters.status ?? "") ? "selected" : ""}>${status || "any status"}</option>`)}</select>
<input name="since" placeholder="since (2h, or a date)" value="${filters.since ?? ""}">
<button>search</button></form>
<table id="invocations"><thead><tr><th>id</th><th>function</th><th>status</th><th>attempts</th><th>enqueued</th><th>took</th><th>last error</th></tr></thead><tbody>
${rows.map(
  (row) => html`<tr><td><a href="/invocations/${row.id}">${row.id}</a></td><td>${row.function}</td>
<td class="status-${row.status}">${row.status}</td><td class="num">${row.attempts}</td><td>${row.enqueuedAt ?? ""}</td>
<td class="num">${row.durationMs === null ? "" : `${row.durationMs} ms`}</td><td>${row.lastError ?? ""}</td></tr>`,
)}</tbody></table>`;
}

/** One invocation: status (live while running), input, result or errors, and its database changes. */
export function invocationPage(view: InvocationStatusView, changes: Map<string, AuditEntry[]>): SafeHtml {
  return html`<div id="live" data-fragment="/fragments/invocations/${view.id}">${invocationSummary(view)}</div>
${view.status === "running" || view.status === "pending" || view.status === "scheduled" || view.status === "failed" ? refreshScript(1_000) : ""}
<h2>database changes</h2>${changes.size === 0 ? html`<p class="muted">none recorded (nothing written, or rolled back)</p>` : ""}
${[...changes].map(
  ([table, entries]) =>
    html`<h3>${table} (${entries.length})</h3><table class="changes"><tbody>${entries.map(
      (entry) =>
        html`<tr><td>${entry.operation}</td><td>${JSON.stringify(entry.pk)}</td><td>${describeChange(entry)}</td><td class="muted">attempt ${entry.attempt ?? "–"}</td></tr>`,
    )}</tbody></table>`,
)}`;
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
  }[];
  return html`<p>status <strong class="status status-${view.status}">${view.status}</strong> · function ${view.function ?? "?"} · attempts ${view.attempts}</p>
${progress}
<p class="muted">enqueued ${view.enqueuedAt ?? "–"} · started ${view.startedAt ?? "–"} · finished ${view.finishedAt ?? "–"}${view.retryOf ? html` · retry of <a href="/invocations/${view.retryOf}">${view.retryOf}</a>` : ""}</p>
${view.input === undefined ? "" : html`<h2>input</h2><pre class="input">${JSON.stringify(view.input, null, 2)}</pre>`}
${view.status === "succeeded" ? html`<h2>result</h2><pre class="result">${JSON.stringify(view.result ?? null, null, 2)}</pre>` : ""}
${errors.length ? html`<h2>errors</h2>${errors.map((error) => html`<details><summary>attempt ${error.attempt}: ${error.code} ${error.name}: ${error.message}</summary><pre>${error.stack ?? ""}</pre></details>`)}` : ""}`;
}
