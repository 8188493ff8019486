import type { AuditEntry } from "../../audit/audit-queries";
import type { FunctionOverview } from "../../inspect/function-overview";
import type { ResolvedFunction } from "../../sdk/define-function";
import { drainText, errorRateText } from "../figures";
import type { FunctionActivity } from "../function-activity";
import { html, type SafeHtml } from "../html";
import { timeCell } from "../time-format";
import { auditRow } from "./audit";
import { functionSettings } from "./function-settings";
import { refreshScript } from "./live-refresh";

/** What the function page shows, read from every runtime, the records and the audit log. */
export interface FunctionPageData {
  name: string;
  /** This function in the overview of every runtime, when any runtime or stream knows it. */
  overview: FunctionOverview | undefined;
  runtimes: number;
  /** Its settings on the runtime serving the dashboard. */
  deployed: ResolvedFunction | undefined;
  /** The runtime's functions folder, which file names are shown relative to. */
  functionsDir: string;
  /** Undefined when the records could not be read within the statement timeout. */
  activity: FunctionActivity | undefined;
  audit: AuditEntry[];
  /** The charts section (range picker and live charts). */
  charts: SafeHtml;
}

/** One function: charts, what it is doing now, settings, recent invocations and errors, audit. */
export function functionPage(data: FunctionPageData): SafeHtml {
  const query = encodeURIComponent(data.name);
  return html`<p><a href="/invocations?function=${query}">all invocations</a> · <a href="/audit?function=${query}">audit</a> · <a href="/dead-letters?function=${query}">dead letters</a></p>
<h2>activity</h2>${data.charts}
<h2>now</h2><div id="now" data-fragment="/fragments/functions/${query}/now" data-every="2000">${nowPanel(data.overview, data.runtimes)}</div>
<h2>settings</h2>${functionSettings(data.name, data.deployed, data.functionsDir)}
${
  data.activity
    ? html`<h2>recent invocations</h2>${recentTable(data.activity)}
<h2>recent errors, grouped by message</h2>${errorTable(data.activity)}`
    : html`<h2>recent invocations and errors</h2><p class="notice error">Its records of the last 24 hours took longer than the dashboard waits to read.</p>`
}
<h2>audit changes</h2>${data.audit.length ? html`<table id="audit"><thead><tr><th>when</th><th>who</th><th>change</th><th>row</th><th>columns</th></tr></thead><tbody>${data.audit.map(auditRow)}</tbody></table><p><a href="/audit?function=${query}">all its changes</a></p>` : html`<p class="muted">no database changes recorded</p>`}
${refreshScript()}`;
}

/** Instances, queue depth and time to drain, across every runtime; refreshed every 2 s. */
export function nowPanel(fn: FunctionOverview | undefined, runtimes: number): SafeHtml {
  if (!fn)
    return html`<p class="muted">no runtime serves it and it has no queue (of ${runtimes} runtime(s) answering)</p>`;
  const cells: [string, string | number][] = [
    ["instances", fn.instances],
    ["in flight", fn.inFlight],
    ["queued", fn.queued ?? "–"],
    ["ack pending", fn.ackPending ?? "–"],
    ["rate /s", fn.ratePerSecond.toFixed(2)],
    ["time to drain", drainText(fn)],
    ["served", fn.served],
    ["error rate", errorRateText(fn.served, fn.errorCount)],
    ["dead", fn.dead],
  ];
  return html`<dl class="figures">${cells.map(([label, value]) => html`<div data-figure="${label}"><dt>${label}</dt><dd>${value}</dd></div>`)}</dl>
${fn.nextDueAt ? html`<p class="muted">next scheduled run ${timeCell(fn.nextDueAt)}</p>` : ""}
<p class="muted">${runtimes} runtime(s) answering; served and error rate since each runtime started</p>`;
}

function recentTable({ recent }: FunctionActivity): SafeHtml {
  if (recent.length === 0) return html`<p class="muted">no job of it in the last 24 hours</p>`;
  return html`<table id="recent"><thead><tr><th>id</th><th>status</th><th>attempts</th><th>last change</th><th>took</th><th>last error</th></tr></thead><tbody>
${recent.map(
  (row) =>
    html`<tr><td><a href="/invocations/${encodeURIComponent(row.id)}">${row.id}</a></td><td class="status-${row.status}">${row.status}</td><td class="num">${row.attempts}</td><td>${timeCell(row.updatedAt)}</td><td class="num">${row.durationMs === null ? "" : `${row.durationMs} ms`}</td><td>${row.lastError ?? ""}</td></tr>`,
)}</tbody></table>`;
}

function errorTable({ errors }: FunctionActivity): SafeHtml {
  if (errors.length === 0) return html`<p class="muted">no failed attempt in the last 24 hours</p>`;
  return html`<table id="error-groups"><thead><tr><th>count</th><th>code</th><th>message</th><th>last seen</th><th>latest</th></tr></thead><tbody>
${errors.map(
  (group) =>
    html`<tr><td class="num">${group.count}</td><td>${group.code}</td><td class="message">${group.message}</td><td>${timeCell(group.lastAt)}</td><td><a href="/invocations/${encodeURIComponent(group.exampleId)}">${group.exampleId.slice(0, 12)}</a></td></tr>`,
)}</tbody></table>`;
}
