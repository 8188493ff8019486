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

const WIDTH = 560;
const HEIGHT = 190;
const LEFT = 44;
const RIGHT = 14;
const TOP = 18;
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
  const scale = yScale(chartMax(chart.series, count), chart.unit !== "ms");
  const y = (value: number) => TOP + PLOT_HEIGHT - (value / scale.top) * PLOT_HEIGHT;
  return html`<figure class="chart" id="${chart.id}"><figcaption>${chart.title}
<span class="legend">${chart.series.map((series) => html`<span class="key ${series.tone}">${series.name}</span>`)}</span></figcaption>
<svg viewBox="0 0 ${WIDTH} ${HEIGHT}" width="${WIDTH}" height="${HEIGHT}" role="img" aria-label="${chart.title}">
${yAxis(scale, chart.unit, y)}${xAxis(chart.from, chart.bucketMs, count, step)}
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

/** A round y scale: a step of 1, 2, 2.5 or 5 times a power of ten, about four steps up to `max`. */
export function yScale(max: number, whole: boolean): { top: number; step: number } {
  const rough = max > 0 ? max / 4 : 0.25;
  const power = 10 ** Math.floor(Math.log10(rough));
  const factors = whole && power < 10 ? [1, 2, 5, 10] : [1, 2, 2.5, 5, 10];
  let step = (factors.find((factor) => factor * power >= rough) ?? 10) * power;
  if (whole) step = Math.max(1, step);
  return { top: Math.max(step, Math.ceil(max / step - 1e-9) * step), step };
}

function yAxis(scale: { top: number; step: number }, unit: string, y: (value: number) => number): SafeHtml {
  const ticks: number[] = [];
  for (let value = 0; value <= scale.top + scale.step / 1_000; value += scale.step) ticks.push(value);
  return html`<g class="axis y">${ticks.map(
    (value) =>
      html`<line class="grid" x1="${LEFT}" x2="${WIDTH - RIGHT}" y1="${y(value).toFixed(1)}" y2="${y(value).toFixed(1)}"/><text x="${LEFT - 6}" y="${(y(value) + 4).toFixed(1)}" text-anchor="end">${axisNumber(value)}</text>`,
  )}<text class="unit" x="${LEFT - 6}" y="${TOP - 8}" text-anchor="end">${unit}</text></g>`;
}

// Steps between labelled times, shortest first: the first that gives at most 7 labels is used.
const TICK_STEPS_MS = [1, 2, 3, 5, 10, 15, 30, 60, 120, 180, 240, 360].map((minutes) => minutes * 60_000);

/** Labels at round UTC times (multiples of the step), e.g. every 3 min over 15 min, 4 h over 24 h. */
function xAxis(from: number, bucketMs: number, count: number, step: number): SafeHtml {
  const span = count * bucketMs;
  const every = TICK_STEPS_MS.find((candidate) => span / candidate <= 7) ?? (TICK_STEPS_MS.at(-1) as number);
  const ticks: SafeHtml[] = [];
  // The window's end is left unlabelled: its text would run off the chart.
  for (let at = Math.ceil(from / every) * every; at < from + span; at += every) {
    const x = (LEFT + ((at - from) / bucketMs) * step).toFixed(1);
    ticks.push(
      html`<line x1="${x}" x2="${x}" y1="${TOP + PLOT_HEIGHT}" y2="${TOP + PLOT_HEIGHT + 4}"/><text x="${x}" y="${HEIGHT - 6}" text-anchor="middle">${new Date(at).toISOString().slice(11, 16)}</text>`,
    );
  }
  return html`<g class="axis x"><line x1="${LEFT}" x2="${WIDTH - RIGHT}" y1="${TOP + PLOT_HEIGHT}" y2="${TOP + PLOT_HEIGHT}"/>${ticks}<text x="4" y="${HEIGHT - 6}">UTC</text></g>`;
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
  return String(Number(value.toFixed(3)));
}

function spanText(ms: number): string {
  return ms >= 60_000 ? `${ms / 60_000} min` : `${ms / 1_000} s`;
}
