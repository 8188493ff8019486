// docs/errors.md is where users look up a code: it must list exactly the codes ERROR_CODES declares,
// each with the status a reply carries and the retry decision the job runner makes. A code added
// to runtime/support/error-codes.ts without its row, or a row that no longer says what the runtime does,
// fails here.
import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { ERROR_CODES, type JetfnErrorCode } from "../../runtime/support/error-codes";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

/** One row of the errors table, by its code. */
interface DocumentedCode {
  code: string;
  status: string;
  retried: string;
}

/** Cells of a markdown table row, trimmed, without the empty edges outside the outer pipes. */
function cells(line: string): string[] {
  return line
    .split("|")
    .slice(1, -1)
    .map((cell) => cell.trim());
}

/** The rows of the first table whose header starts with `code`, read by column name. */
function errorTable(markdown: string): DocumentedCode[] {
  const lines = markdown.split("\n");
  const start = lines.findIndex((line) => /^\|\s*code\s*\|/.test(line));
  const header = cells(lines[start] ?? "");
  const column = (name: string): number => header.indexOf(name);
  const rows = lines.slice(start + 2);
  const end = rows.findIndex((line) => !line.startsWith("|"));
  return rows.slice(0, end === -1 ? undefined : end).map((line) => {
    const row = cells(line);
    return {
      code: (row[column("code")] ?? "").replace(/`/g, ""),
      status: row[column("status")] ?? "",
      retried: row[column("retried")] ?? "",
    };
  });
}

describe("docs/errors.md", () => {
  const documented = errorTable(readFileSync(path.join(ROOT, "docs/errors.md"), "utf8"));
  const declared = Object.keys(ERROR_CODES) as JetfnErrorCode[];

  it("finds the table and its columns", () => {
    expect(documented.length).toBeGreaterThan(10);
    expect(documented[0]).toEqual({ code: "E_INPUT_INVALID", status: "400", retried: "no" });
  });

  it("lists every declared code once, and no other", () => {
    const codes = documented.map((row) => row.code);
    expect(new Set(codes).size).toBe(codes.length);
    expect([...codes].sort()).toEqual([...declared].sort());
  });

  it.each(declared)("gives %s the status and retry decision the runtime uses", (code) => {
    const entry = ERROR_CODES[code];
    expect(documented.find((row) => row.code === code)).toEqual({
      code,
      status: String(entry.status),
      retried: entry.retryable ? "yes" : "no",
    });
  });
});
