import { type AuditEntry, groupByTable, type InvocationStep } from "../audit/audit-queries";

const VALUE_LIMIT = 60;

/** One readable line per change: when, who, what, and a compact column diff (`qty: 3 -> 5`). */
export function describeAuditEntry(entry: AuditEntry): string {
  const when = entry.at.replace("T", " ").slice(0, 19);
  const who = entry.function
    ? `${entry.function} ${entry.invocationId ?? "?"}${entry.attempt && entry.attempt > 1 ? ` (attempt ${entry.attempt})` : ""}`
    : `outside (${entry.dbUser})`;
  // Quoted, as values are: a step's name is the handler's to choose. Shown outside functions too, where it is odd.
  const step = entry.step == null ? "" : ` step ${quoted(entry.step)}`;
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

/**
 * One invocation's changes (`jetfn audit <invocation-id>`), in the order they were made: those of
 * each durable step under a line naming it (its attempt, when it finished, its transaction), in step
 * order, then the rest (a job's own transaction), each group by table. Without steps, by table alone.
 */
export function describeInvocationChanges(entries: AuditEntry[], steps: InvocationStep[]): string {
  if (!entries.some((entry) => entry.step != null)) return describeByTable(entries, "");
  const bySeq = new Map(steps.map((step) => [step.key, step]));
  const groups = new Map<string | null, AuditEntry[]>();
  for (const entry of entries) groups.set(entry.step, [...(groups.get(entry.step) ?? []), entry]);
  const keys = [...groups.keys()].sort((a, b) => stepOrder(a, bySeq) - stepOrder(b, bySeq));
  return keys
    .map((key) => {
      const group = groups.get(key) ?? [];
      if (key === null) return `outside steps (the job's own transaction)\n${describeByTable(group, "  ")}`;
      return `${stepHeading(key, bySeq.get(key))}\n${describeByTable(group, "  ", bySeq.get(key))}`;
    })
    .join("");
}

function stepOrder(key: string | null, steps: Map<string, InvocationStep>): number {
  if (key === null) return Number.MAX_SAFE_INTEGER;
  return steps.get(key)?.seq ?? Number.MAX_SAFE_INTEGER - 1;
}

function stepHeading(key: string, step: InvocationStep | undefined): string {
  // Quoted, as in each line: a step's name is the handler's to choose.
  if (!step) return `step ${quoted(key)}`;
  const details = [`attempt ${step.attempt}`];
  if (step.finishedAt) details.push(`at ${step.finishedAt.replace("T", " ").slice(0, 19)}`);
  if (step.txid) details.push(`txid ${step.txid}`);
  return `step ${quoted(key)} (${details.join(", ")})`;
}

/**
 * JSON-quoted, with the characters JSON leaves as they are but a terminal would act on or hide
 * (C1 controls, format characters such as bidi overrides, line and paragraph separators) escaped:
 * a step's name written into the database some other way must not pass for other output.
 */
function quoted(text: string): string {
  return JSON.stringify(text).replace(
    /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/gu,
    // Each UTF-16 unit on its own, as JSON writes them: U+E0041 is \udb40\udc41.
    (char) =>
      char
        .split("")
        .map((unit) => `\\u${unit.charCodeAt(0).toString(16).padStart(4, "0")}`)
        .join(""),
  );
}

function describeByTable(entries: AuditEntry[], indent: string, step?: InvocationStep): string {
  let text = "";
  for (const [table, changes] of groupByTable(entries)) {
    text += `${indent}${table}: ${changes.length} change(s)\n`;
    for (const change of changes) {
      // A row stamped with the step but written in another transaction than the step's: not its doing.
      const foreign = step?.txid && String(change.txid) !== step.txid ? `  [txid ${change.txid}, not the step's]` : "";
      text += `${indent}  ${describeAuditEntry(change)}${foreign}\n`;
    }
  }
  return text;
}
