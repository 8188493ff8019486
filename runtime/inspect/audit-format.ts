import type { AuditEntry } from "../audit/audit-queries";

const VALUE_LIMIT = 60;

/** One readable line per change: when, who, what, and a compact column diff (`qty: 3 -> 5`). */
export function describeAuditEntry(entry: AuditEntry): string {
  const when = entry.at.replace("T", " ").slice(0, 19);
  const who = entry.function
    ? `${entry.function} ${entry.invocationId ?? "?"}${entry.attempt && entry.attempt > 1 ? ` (attempt ${entry.attempt})` : ""}`
    : `outside (${entry.dbUser})`;
  // Quoted, as values are: a step's name is the handler's to choose. Shown outside functions too, where it is odd.
  const step = entry.step == null ? "" : ` step ${JSON.stringify(entry.step)}`;
  const where = `${entry.schema === "public" ? "" : `${entry.schema}.`}${entry.table}`;
  const key = entry.pk ? ` ${formatKey(entry.pk)}` : "";
  return `${when}  ${who}${step}  ${entry.operation} ${where}${key}  ${describeChange(entry)}`.trimEnd();
}

/** The change itself: the columns of an inserted or deleted row, or old -> new of each changed column. */
export function describeChange(entry: AuditEntry): string {
  switch (entry.operation) {
    case "INSERT":
      return formatColumns(entry.newRow, entry.pk);
    case "DELETE":
      return formatColumns(entry.oldRow, entry.pk);
    case "UPDATE":
      return (entry.changedColumns ?? [])
        .map((column) => `${column}: ${formatValue(entry.oldRow?.[column])} -> ${formatValue(entry.newRow?.[column])}`)
        .join(", ");
    case "TRUNCATE":
      return "all rows";
  }
}

function formatKey(pk: Record<string, unknown>): string {
  const values = Object.values(pk);
  return values.length === 1 ? `#${formatValue(values[0])}` : `#${JSON.stringify(pk)}`;
}

function formatColumns(row: Record<string, unknown> | null, pk: Record<string, unknown> | null): string {
  if (!row) return "";
  return Object.entries(row)
    .filter(([column]) => !(pk && column in pk))
    .map(([column, value]) => `${column}=${formatValue(value)}`)
    .join(" ");
}

function formatValue(value: unknown): string {
  const text = value === undefined ? "null" : JSON.stringify(value);
  return text.length > VALUE_LIMIT ? `${text.slice(0, VALUE_LIMIT - 1)}…` : text;
}
