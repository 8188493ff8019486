/**
 * SQL literals for jetfn's own statements, so they can travel as simple-protocol queries. The
 * driver sends a statement with parameters in two round trips (it asks for their types first) and
 * stops pipelining behind it; a statement written with literals goes in one, behind whatever the
 * connection already has in flight.
 */

/** A value as a SQL literal: NULL, a finite number as written, or an escaped string (E'...'). */
export function sqlLiteral(value: unknown): string {
  if (value === null || value === undefined) return "NULL";
  if (typeof value === "number") {
    if (!Number.isFinite(value)) throw new TypeError(`cannot write ${value} as a SQL literal`);
    return String(value);
  }
  if (typeof value === "boolean") return value ? "true" : "false";
  // E'' strings read backslashes the same way whatever standard_conforming_strings says.
  const text = String(value);
  if (text.includes("\u0000")) throw new TypeError("a SQL literal cannot hold U+0000");
  return `E'${text.replaceAll("\\", "\\\\").replaceAll("'", "''")}'`;
}

/**
 * `text` with each `$n` replaced by the literal of `params[n - 1]`. Only for statement texts jetfn
 * writes itself, which hold no `$` other than their placeholders.
 */
export function inlineParameters(text: string, params: readonly unknown[]): string {
  return text.replace(/\$(\d+)/g, (_, position: string) => {
    const index = Number(position) - 1;
    if (index < 0 || index >= params.length) throw new RangeError(`no parameter $${position} for: ${text}`);
    return sqlLiteral(params[index]);
  });
}
