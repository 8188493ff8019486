import { html, type SafeHtml } from "../html";

/** Stacked bars of succeeded (blue) and failed (red) invocations per slot. */
export function throughputChart(succeeded: number[], failed: number[], width = 360, height = 80): SafeHtml {
  const max = Math.max(1, ...succeeded.map((count, index) => count + (failed[index] ?? 0)));
  const barWidth = width / Math.max(1, succeeded.length);
  const bars = succeeded.map((ok, index) => {
    const bad = failed[index] ?? 0;
    const okHeight = (ok / max) * height;
    const badHeight = (bad / max) * height;
    const x = (index * barWidth).toFixed(1);
    return html`<rect x="${x}" y="${(height - okHeight - badHeight).toFixed(1)}" width="${(barWidth - 1).toFixed(1)}" height="${okHeight.toFixed(1)}" fill="#6ea8fe"/><rect x="${x}" y="${(height - badHeight).toFixed(1)}" width="${(barWidth - 1).toFixed(1)}" height="${badHeight.toFixed(1)}" fill="#e57373"/>`;
  });
  return html`<svg class="throughput" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img" aria-label="invocations per 10s, last 10 minutes (max ${max})">${bars}</svg>`;
}

/** Bars of how many invocations fell into each duration bucket. */
export function durationChart(buckets: { upToMs: number; count: number }[], width = 360, height = 80): SafeHtml {
  const max = Math.max(1, ...buckets.map((bucket) => bucket.count));
  const barWidth = width / Math.max(1, buckets.length);
  const bars = buckets.map((bucket, index) => {
    const barHeight = (bucket.count / max) * height;
    return html`<rect x="${(index * barWidth).toFixed(1)}" y="${(height - barHeight).toFixed(1)}" width="${(barWidth - 1).toFixed(1)}" height="${barHeight.toFixed(1)}" fill="#81c784"><title>≤ ${bucket.upToMs.toFixed(1)} ms: ${bucket.count}</title></rect>`;
  });
  return html`<svg class="durations" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img" aria-label="duration distribution">${bars}</svg>`;
}
