import type { AuditEntry } from "../../audit/audit-queries";
import type { AuditVerification } from "../../audit/audit-verify";
import { html, type SafeHtml } from "../html";
import { timeCell } from "../time-format";

/** Filters of the audit view, as typed in the form. */
export interface AuditFilters {
  function?: string;
  table?: string;
  invocation?: string;
  since?: string;
  row?: string;
}

/** The audit log with filters, the chain's verify status, and each change's diff. */
export function auditPage(entries: AuditEntry[], filters: AuditFilters, chain: AuditVerification): SafeHtml {
  const verify = chain.broken
    ? html`<p class="broken">hash chain BROKEN at seal #${chain.broken.seq}: ${chain.broken.problem}</p>`
    : html`<p class="ok">hash chain intact: ${chain.seals} seal(s), ${chain.sealedRows} row(s) sealed, ${chain.unsealedRows} waiting; anchored in NATS through seal #${chain.anchors.anchoredThrough}, ${chain.anchors.unanchored} seal(s) not anchored yet</p>`;
  return html`${verify}<form class="filters" method="get">
<input name="function" placeholder="function" value="${filters.function ?? ""}">
<input name="table" placeholder="table" value="${filters.table ?? ""}">
<input name="invocation" placeholder="invocation id" value="${filters.invocation ?? ""}">
<input name="row" placeholder="row key (with table)" value="${filters.row ?? ""}">
<input name="since" placeholder="since (2h, or a date)" value="${filters.since ?? ""}">
<button>filter</button></form>
${filters.row ? html`<h2>history of ${filters.table} row ${filters.row}</h2>` : ""}
<table id="audit"><thead><tr><th>when</th><th>who</th><th>change</th><th>row</th><th>columns</th></tr></thead><tbody>
${entries.map((entry) => auditRow(entry))}</tbody></table>`;
}

/** One audit entry as a table row: when, who (function and invocation), the change and its diff. */
export function auditRow(entry: AuditEntry): SafeHtml {
  const who = entry.function
    ? html`${entry.function} <a href="/invocations/${entry.invocationId ?? ""}">${(entry.invocationId ?? "").slice(0, 8)}</a>${entry.attempt && entry.attempt > 1 ? ` (attempt ${entry.attempt})` : ""}`
    : html`<span class="muted">outside (${entry.dbUser})</span>`;
  const step = entry.step == null ? "" : html` <span class="muted">step ${entry.step}</span>`;
  const key = entry.pk ? Object.values(entry.pk).map(String).join(",") : "";
  const rowLink = entry.pk
    ? html`<a href="/audit?table=${entry.table}&row=${encodeURIComponent(JSON.stringify(entry.pk))}">${key}</a>`
    : "";
  return html`<tr><td>${timeCell(entry.at)}</td><td>${who}${step}</td><td>${entry.operation} ${entry.table}</td><td>${rowLink}</td><td>${columns(entry)}</td></tr>`;
}

function columns(entry: AuditEntry): SafeHtml {
  if (entry.operation === "UPDATE") {
    return html`${(entry.changedColumns ?? []).map(
      (column) =>
        html`<div>${column}: <span class="diff-old">${JSON.stringify(entry.oldRow?.[column] ?? null)}</span> → <span class="diff-new">${JSON.stringify(entry.newRow?.[column] ?? null)}</span></div>`,
    )}`;
  }
  const row = entry.operation === "DELETE" ? entry.oldRow : entry.newRow;
  return html`<span class="${entry.operation === "DELETE" ? "diff-old" : "diff-new"}">${row ? JSON.stringify(row) : "all rows"}</span>`;
}
