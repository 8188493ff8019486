import { CHART_RANGES, type ChartRange } from "../chart-range";
import { html, type SafeHtml } from "../html";
import type { Series } from "../series-query";
import { timeChart } from "./time-chart";

/** Where the charts' figures come from, for the fragment that refreshes them. */
export interface ChartsSource {
  /** One function, or every function of the deployment when absent. */
  fn?: string;
  range: ChartRange;
}

/** The range picker and the live charts: they refresh themselves about once a bucket. */
export function chartsSection(content: SafeHtml, source: ChartsSource): SafeHtml {
  const query = new URLSearchParams({ range: source.range.name, ...(source.fn ? { function: source.fn } : {}) });
  return html`<p class="ranges">range ${CHART_RANGES.map(
    (range) =>
      html`<a href="?range=${range.name}" class="${range === source.range ? "active" : ""}" data-range="${range.name}">${range.label}</a> `,
  )}</p>
<div class="live-charts" data-fragment="/fragments/charts?${query.toString()}" data-every="${source.range.refreshMs}">${content}</div>
${hoverScript()}`;
}

/** Throughput, errors, and p50/p99 duration of the jobs that ended, one bar per bucket. */
export function seriesCharts(series: Series): SafeHtml {
  const { buckets, range } = series;
  const per = range.bucketMs >= 60_000 ? `${range.bucketMs / 60_000} min` : `${range.bucketMs / 1_000} s`;
  const common = { from: series.from, bucketMs: range.bucketMs };
  const total = buckets.reduce((sum, bucket) => sum + bucket.succeeded + bucket.errors, 0);
  const failed = buckets.reduce((sum, bucket) => sum + bucket.errors, 0);
  return html`<p class="muted totals">last ${range.label}: <strong class="total-attempts">${total}</strong> attempts ended, <strong class="total-errors">${failed}</strong> failed</p>
<div class="charts">
${timeChart({
  ...common,
  id: "chart-throughput",
  title: `throughput: attempts ended per ${per}`,
  unit: "jobs",
  series: [
    { name: "succeeded", tone: "s-ok", kind: "bar", values: buckets.map((bucket) => bucket.succeeded) },
    { name: "failed", tone: "s-error", kind: "bar", values: buckets.map((bucket) => bucket.errors) },
  ],
})}
${timeChart({
  ...common,
  id: "chart-errors",
  title: `errors: failed attempts per ${per}`,
  unit: "errors",
  series: [{ name: "failed", tone: "s-error", kind: "bar", values: buckets.map((bucket) => bucket.errors) }],
})}
${timeChart({
  ...common,
  id: "chart-duration",
  title: "duration of the last attempt of jobs that ended",
  unit: "ms",
  series: [
    { name: "p50", tone: "s-p50", kind: "line", values: buckets.map((bucket) => bucket.p50) },
    { name: "p99", tone: "s-p99", kind: "line", values: buckets.map((bucket) => bucket.p99) },
  ],
})}
</div><p class="muted">Jobs of every runtime, from their records (jetfn.invocations); calls (request-reply) keep no record and are counted in the functions table only. Times in UTC.</p>`;
}

/** What the charts say when their figures could not be read in time. */
export function chartsUnavailable(reason: string): SafeHtml {
  return html`<p class="notice error charts-error">${reason}</p>`;
}

/** Shows a hovered bucket's figures under its chart; delegated, so it survives refreshes. */
function hoverScript(): SafeHtml {
  return html`<script>
document.addEventListener("mouseover", (event) => {
  const target = event.target;
  if (!(target instanceof SVGElement) || !target.classList.contains("hit")) return;
  const readout = target.closest("figure")?.querySelector(".readout");
  if (readout) readout.textContent = target.dataset.tip ?? "";
});
</script>`;
}
