import type { FunctionOverview } from "../../cli/function-overview";
import type { DurationHistogram } from "../../duration-histogram";
import { drainText, errorRateText } from "../figures";
import type { FunctionHistory } from "../history";
import { html, type SafeHtml } from "../html";
import { durationChart, throughputChart } from "./charts";

/** The functions table: one row per function across all runtimes; refreshed in place every 2s. */
export function functionsTable(functions: FunctionOverview[], runtimes: number): SafeHtml {
  const rows = functions.map((fn) => {
    const errorRate = errorRateText(fn.served, fn.errorCount);
    return html`<tr data-function="${fn.function}">
<td><a href="/functions/${fn.function}">${fn.function}</a></td>
<td class="num">${fn.instances}</td><td class="num served">${fn.served}</td><td class="num error-rate">${errorRate}</td>
<td class="num">${fn.duration.count ? fn.duration.median.toFixed(1) : "–"}</td><td class="num">${fn.duration.count ? fn.duration.p99.toFixed(1) : "–"}</td>
<td class="num queued">${fn.queued ?? "–"}${fn.queuedPriority ? ` (${fn.queuedPriority} prio)` : ""}</td><td class="num">${fn.ackPending ?? "–"}</td>
<td class="num">${fn.ratePerSecond.toFixed(2)}</td><td class="num drain">${drainText(fn)}</td>
<td class="num">${fn.dead}</td></tr>`;
  });
  return html`<p class="muted">${runtimes} runtime(s) answering</p>
<table id="functions"><thead><tr><th>function</th><th>instances</th><th>served</th><th>errors</th><th>p50 ms</th><th>p99 ms</th>
<th>queued</th><th>ack pending</th><th>rate /s</th><th>time to drain</th><th>dead</th></tr></thead>
<tbody>${rows}</tbody></table>`;
}

/** Page body of the functions view: the table, refreshed by a small script. */
export function functionsPage(table: SafeHtml): SafeHtml {
  return html`<div id="live" data-fragment="/fragments/functions">${table}</div>${refreshScript()}`;
}

/** One function: its charts (this process) and its recent invocations link. */
export function functionPage(name: string, history: FunctionHistory, histogram: DurationHistogram): SafeHtml {
  return html`<p><a href="/invocations?function=${name}">invocations</a> · <a href="/audit?function=${name}">audit</a> · <a href="/dead-letters?function=${name}">dead letters</a></p>
<div class="charts">
<div class="chart"><h2>throughput and errors, last 10 minutes (per 10s)</h2>${throughputChart(history.succeeded, history.failed)}</div>
<div class="chart"><h2>duration distribution</h2>${durationChart(durationBuckets(histogram))}</div>
</div><p class="muted">Charts show this runtime process; the functions table adds up every runtime.</p>`;
}

/** A small script that reloads the element marked data-fragment every 2 seconds. */
export function refreshScript(intervalMs = 2_000): SafeHtml {
  return html`<script>
setInterval(async () => {
  for (const element of document.querySelectorAll("[data-fragment]")) {
    const response = await fetch(element.dataset.fragment, { headers: { accept: "text/html" } });
    if (response.ok) element.innerHTML = await response.text();
  }
}, ${intervalMs});
</script>`;
}

/** Coarse buckets (at most 24) of a sparse log histogram, for the chart. */
export function durationBuckets(histogram: DurationHistogram): { upToMs: number; count: number }[] {
  const indexes = Object.keys(histogram.buckets)
    .map(Number)
    .sort((a, b) => a - b);
  if (indexes.length === 0) return [];
  const first = indexes[0] as number;
  const last = indexes.at(-1) as number;
  const width = Math.max(1, Math.ceil((last - first + 1) / 24));
  const buckets: { upToMs: number; count: number }[] = [];
  for (let start = first; start <= last; start += width) {
    let count = 0;
    for (let index = start; index < start + width; index++) count += histogram.buckets[index] ?? 0;
    buckets.push({ upToMs: histogram.base_ms * histogram.factor ** (start + width - 1), count });
  }
  return buckets;
}
