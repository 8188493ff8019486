import { isDeepStrictEqual } from "node:util";
import type { AuditEntry } from "../audit/audit-queries";
import type { CallRun, JobRun } from "./harness";

type Run = JobRun | CallRun;

/** What a matcher returns to vitest's (or jest's) `expect.extend`. */
interface MatcherResult {
  pass: boolean;
  message: () => string;
}

/**
 * Matchers on what a function did rather than only what it returned, read from the audit log.
 * Register once: `expect.extend(jetfnMatchers)`.
 */
export const jetfnMatchers = {
  /** The job (or call) succeeded. */
  toHaveSucceeded(run: Run): MatcherResult {
    return result(
      run.status === "succeeded",
      () => `expected ${describe(run)} to have succeeded, but it is ${run.status}${lastError(run)}`,
    );
  },
  /** The job ended dead (optionally with this error code on its last attempt). */
  toHaveDeadLettered(run: Run, code?: string): MatcherResult {
    const last = run.kind === "job" ? run.errors.at(-1)?.code : run.error?.code;
    const pass = run.status === "dead" && (code === undefined || last === code);
    return result(
      pass,
      () =>
        `expected ${describe(run)} to be dead${code ? ` with ${code}` : ""}, but it is ${run.status}${lastError(run)}`,
    );
  },
  /** It inserted or updated a row of `table` whose values include `values`. */
  toHaveWritten(run: Run, table: string, values: Record<string, unknown> = {}): MatcherResult {
    const hit = run.changes.find(
      (change) =>
        sameTable(change, table) &&
        (change.operation === "INSERT" || change.operation === "UPDATE") &&
        includes(change.newRow, values),
    );
    return result(
      hit !== undefined,
      () =>
        `expected ${describe(run)} to have written ${table} ${JSON.stringify(values)}; it changed:\n${listChanges(run)}`,
    );
  },
  /** It deleted a row of `table` whose values include `values`. */
  toHaveDeleted(run: Run, table: string, values: Record<string, unknown> = {}): MatcherResult {
    const hit = run.changes.find(
      (change) => sameTable(change, table) && change.operation === "DELETE" && includes(change.oldRow, values),
    );
    return result(
      hit !== undefined,
      () =>
        `expected ${describe(run)} to have deleted from ${table} ${JSON.stringify(values)}; it changed:\n${listChanges(run)}`,
    );
  },
  /** It changed exactly `count` rows of `table` (any operation). */
  toHaveChangedRows(run: Run, table: string, count: number): MatcherResult {
    const changed = run.changes.filter((change) => sameTable(change, table)).length;
    return result(
      changed === count,
      () => `expected ${describe(run)} to have changed ${count} row(s) of ${table}, it changed ${changed}`,
    );
  },
  /** It left the database as it was (also true of a rolled-back attempt). */
  toHaveWrittenNothing(run: Run): MatcherResult {
    return result(
      run.changes.length === 0,
      () => `expected ${describe(run)} to have written nothing; it changed:\n${listChanges(run)}`,
    );
  },
};

function result(pass: boolean, message: () => string): MatcherResult {
  return { pass, message };
}

function describe(run: Run): string {
  return `${run.kind} ${run.id}`;
}

function lastError(run: Run): string {
  const message = run.kind === "job" ? run.errors.at(-1)?.message : run.error?.message;
  return message ? ` (${message})` : "";
}

function sameTable(change: AuditEntry, table: string): boolean {
  return table.includes(".") ? `${change.schema}.${change.table}` === table : change.table === table;
}

function includes(row: Record<string, unknown> | null, values: Record<string, unknown>): boolean {
  return row !== null && Object.entries(values).every(([column, value]) => isDeepStrictEqual(row[column], value));
}

function listChanges(run: Run): string {
  if (run.changes.length === 0) return "  (nothing)";
  return run.changes
    .map((change) => `  ${change.operation} ${change.table} ${JSON.stringify(change.newRow ?? change.oldRow)}`)
    .join("\n");
}

/** Types of the matchers, for `declare module "vitest" { interface Assertion<T> extends JetfnMatchers<T> {} }`. */
export interface JetfnMatchers<R = unknown> {
  toHaveSucceeded(): R;
  toHaveDeadLettered(code?: string): R;
  toHaveWritten(table: string, values?: Record<string, unknown>): R;
  toHaveDeleted(table: string, values?: Record<string, unknown>): R;
  toHaveChangedRows(table: string, count: number): R;
  toHaveWrittenNothing(): R;
}
