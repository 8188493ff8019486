import { html, type SafeHtml } from "../html";
import { readableTime } from "../time-format";

/** One thing a chart draws: bars (stacked in order) or a line; a null value draws nothing. */
export interface ChartSeries {
  name: string;
  /** A CSS class giving its colour (`.s-ok`, `.s-error`, `.s-p50`, `.s-p99`). */
  tone: string;
  kind: "bar" | "line";
  values: readonly (number | null)[];
}

/** A chart over time: buckets of equal width from `from`, a y axis in `unit`. */
export interface TimeChart {
  id: string;
  title: string;
  unit: string;
  from: number;
  bucketMs: number;
  series: readonly ChartSeries[];
}

const WIDTH = 720;
const HEIGHT = 200;
const LEFT = 52;
const RIGHT = 8;
const TOP = 10;
const BOTTOM = 24;
const PLOT_WIDTH = WIDTH - LEFT - RIGHT;
const PLOT_HEIGHT = HEIGHT - TOP - BOTTOM;

/**
 * An SVG chart that reads as a chart: a y axis with a round scale and grid, an x axis with UTC
 * times, a legend, and for each bucket a hover target whose tooltip (and the readout line under
 * the chart) gives the bucket's time and every series' value.
 */
export function timeChart(chart: TimeChart): SafeHtml {
  const count = Math.max(1, ...chart.series.map((series) => series.values.length));
  const step = PLOT_WIDTH / count;
  const top = niceMax(chartMax(chart.series, count));
  const y = (value: number) => TOP + PLOT_HEIGHT - (value / top) * PLOT_HEIGHT;
  return html`<figure class="chart" id="${chart.id}"><figcaption>${chart.title}
<span class="legend">${chart.series.map((series) => html`<span class="key ${series.tone}">${series.name}</span>`)}</span></figcaption>
<svg viewBox="0 0 ${WIDTH} ${HEIGHT}" width="${WIDTH}" height="${HEIGHT}" role="img" aria-label="${chart.title}">
${yAxis(top, chart.unit, y)}${xAxis(chart.from, chart.bucketMs, count, step)}
${bars(chart.series, count, step, y)}${lines(chart.series, step, y)}${hoverTargets(chart, count, step)}
</svg><p class="readout muted">hover over the chart for the figures of a moment</p></figure>`;
}

/** The largest value a chart must show: stacked bars add up, lines stand alone. */
function chartMax(series: readonly ChartSeries[], count: number): number {
  let max = 0;
  for (let index = 0; index < count; index++) {
    let stack = 0;
    for (const entry of series) {
      const value = entry.values[index] ?? 0;
      if (entry.kind === "bar") stack += value;
      else max = Math.max(max, value);
    }
    max = Math.max(max, stack);
  }
  return max;
}

/** The top of the y axis: 1, 2, 2.5 or 5 times a power of ten, at or above `max` (at least 1). */
export function niceMax(max: number): number {
  if (!(max > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(max));
  for (const factor of [1, 2, 2.5, 5, 10]) if (factor * power >= max) return factor * power;
  return 10 * power;
}

function yAxis(top: number, unit: string, y: (value: number) => number): SafeHtml {
  const ticks = [0, 0.25, 0.5, 0.75, 1].map((share) => share * top);
  return html`<g class="axis y">${ticks.map(
    (value) =>
      html`<line class="grid" x1="${LEFT}" x2="${WIDTH - RIGHT}" y1="${y(value).toFixed(1)}" y2="${y(value).toFixed(1)}"/><text x="${LEFT - 6}" y="${(y(value) + 4).toFixed(1)}" text-anchor="end">${axisNumber(value)}</text>`,
  )}<text class="unit" x="4" y="${TOP + 8}">${unit}</text></g>`;
}

function xAxis(from: number, bucketMs: number, count: number, step: number): SafeHtml {
  const every = Math.max(1, Math.round(count / 6));
  const ticks: SafeHtml[] = [];
  for (let index = 0; index <= count; index += every) {
    const x = (LEFT + index * step).toFixed(1);
    const at = new Date(from + index * bucketMs).toISOString().slice(11, 16);
    ticks.push(
      html`<line x1="${x}" x2="${x}" y1="${TOP + PLOT_HEIGHT}" y2="${TOP + PLOT_HEIGHT + 4}"/><text x="${x}" y="${HEIGHT - 6}" text-anchor="middle">${at}</text>`,
    );
  }
  return html`<g class="axis x"><line x1="${LEFT}" x2="${WIDTH - RIGHT}" y1="${TOP + PLOT_HEIGHT}" y2="${TOP + PLOT_HEIGHT}"/>${ticks}<text x="${WIDTH - RIGHT}" y="${TOP - 1}" text-anchor="end">UTC</text></g>`;
}

function bars(series: readonly ChartSeries[], count: number, step: number, y: (value: number) => number): SafeHtml[] {
  const out: SafeHtml[] = [];
  for (let index = 0; index < count; index++) {
    let base = 0;
    for (const entry of series) {
      const value = entry.kind === "bar" ? (entry.values[index] ?? 0) : 0;
      if (value <= 0) continue;
      const x = (LEFT + index * step + step * 0.1).toFixed(1);
      out.push(
        html`<rect class="${entry.tone}" x="${x}" y="${y(base + value).toFixed(1)}" width="${(step * 0.8).toFixed(1)}" height="${(y(base) - y(base + value)).toFixed(1)}"/>`,
      );
      base += value;
    }
  }
  return out;
}

/** Each line as a path, broken where a bucket has no value; a lone point gets a dot. */
function lines(series: readonly ChartSeries[], step: number, y: (value: number) => number): SafeHtml[] {
  return series
    .filter((entry) => entry.kind === "line")
    .map((entry) => {
      let path = "";
      const dots: SafeHtml[] = [];
      entry.values.forEach((value, index) => {
        if (value === null) return;
        const x = (LEFT + (index + 0.5) * step).toFixed(1);
        const previous = entry.values[index - 1];
        path += `${previous === null || previous === undefined ? "M" : "L"}${x},${y(value).toFixed(1)} `;
        dots.push(html`<circle class="${entry.tone}" cx="${x}" cy="${y(value).toFixed(1)}" r="2"/>`);
      });
      return html`<path class="line ${entry.tone}" d="${path.trim()}"/>${dots}`;
    });
}

/** Invisible full-height columns, one per bucket, carrying the bucket's figures. */
function hoverTargets(chart: TimeChart, count: number, step: number): SafeHtml[] {
  const targets: SafeHtml[] = [];
  for (let index = 0; index < count; index++) {
    const start = chart.from + index * chart.bucketMs;
    const figures = chart.series
      .map((series) => `${series.name} ${valueText(series.values[index] ?? null, chart.unit)}`)
      .join(" · ");
    const tip = `${readableTime(new Date(start))} + ${spanText(chart.bucketMs)}: ${figures}`;
    targets.push(
      html`<rect class="hit" data-tip="${tip}" x="${(LEFT + index * step).toFixed(1)}" y="${TOP}" width="${step.toFixed(1)}" height="${PLOT_HEIGHT}"><title>${tip}</title></rect>`,
    );
  }
  return targets;
}

function valueText(value: number | null, unit: string): string {
  if (value === null) return "–";
  return unit === "ms" ? `${value < 10 ? value.toFixed(1) : Math.round(value)} ms` : String(value);
}

function axisNumber(value: number): string {
  if (value >= 10_000) return `${Number((value / 1_000).toFixed(1))}k`;
  return Number.isInteger(value) ? String(value) : value.toFixed(1);
}

function spanText(ms: number): string {
  return ms >= 60_000 ? `${ms / 60_000} min` : `${ms / 1_000} s`;
}
