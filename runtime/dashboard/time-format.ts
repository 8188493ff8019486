import { html, type SafeHtml } from "./html";

/**
 * The one way the dashboard shows a time: "2026-12-06 13:01:39 UTC", the same for every reader
 * whatever the browser's locale, never wrapping, with the exact ISO 8601 value as a tooltip.
 * Text that is not a time is shown as it is; no time shows "–".
 */
export function timeCell(value: string | null | undefined): SafeHtml {
  if (!value) return html`–`;
  const date = new Date(value);
  if (Number.isNaN(date.getTime())) return html`${value}`;
  const iso = date.toISOString();
  return html`<time datetime="${iso}" title="${iso}">${readableTime(date)}</time>`;
}

/** "2026-12-06 13:01:39 UTC": seconds are enough to read; the tooltip has the milliseconds. */
export function readableTime(date: Date): string {
  return `${date.toISOString().slice(0, 19).replace("T", " ")} UTC`;
}
