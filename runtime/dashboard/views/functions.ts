import type { FunctionOverview } from "../../inspect/function-overview";
import { drainText, errorRateText } from "../figures";
import { html, type SafeHtml } from "../html";
import { refreshScript } from "./live-refresh";

/** The functions table: one row per function across all runtimes; refreshed in place every 2s. */
export function functionsTable(functions: FunctionOverview[], runtimes: number): SafeHtml {
  const rows = functions.map((fn) => {
    const errorRate = errorRateText(fn.served, fn.errorCount);
    return html`<tr data-function="${fn.function}">
<td><a href="/functions/${encodeURIComponent(fn.function)}">${fn.function}</a></td>
<td class="num">${fn.instances}</td><td class="num served">${fn.served}</td><td class="num error-rate">${errorRate}</td>
<td class="num">${fn.duration.count ? fn.duration.median.toFixed(1) : "–"}</td><td class="num">${fn.duration.count ? fn.duration.p99.toFixed(1) : "–"}</td>
<td class="num queued">${fn.queued ?? "–"}${fn.queuedPriority ? ` (${fn.queuedPriority} prio)` : ""}</td><td class="num">${fn.ackPending ?? "–"}</td>
<td class="num">${fn.ratePerSecond.toFixed(2)}</td><td class="num drain">${drainText(fn)}</td>
<td class="num">${fn.dead}</td><td class="num waiting">${fn.waiting ?? "–"}</td><td>${fn.limits.join(", ")}</td></tr>`;
  });
  return html`<p class="muted">${runtimes} runtime(s) answering</p>
<table id="functions"><thead><tr><th>function</th><th>instances</th><th>served</th><th>errors</th><th>p50 ms</th><th>p99 ms</th>
<th>queued</th><th>ack pending</th><th>rate /s</th><th>time to drain</th><th>dead</th><th>waiting</th><th>limits</th></tr></thead>
<tbody>${rows}</tbody></table>`;
}

/** Page body of the functions view: the live table, then the whole deployment's charts. */
export function functionsPage(table: SafeHtml, charts: SafeHtml): SafeHtml {
  return html`<div id="live" data-fragment="/fragments/functions" data-every="2000">${table}</div>
<h2>every function's jobs</h2>${charts}${refreshScript()}`;
}
