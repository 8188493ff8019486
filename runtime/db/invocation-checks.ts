import { JetfnError } from "../support/errors";
import { sqlLiteral } from "./sql-literal";
import type { TransactionStamp } from "./transaction-parts";

/**
 * The checks made just before the runtime commits a transaction its handlers' statements ran in
 * (jetfn.verify_invocation and jetfn.verify_group, schema/migrations/0001_jetfn_baseline.sql): the transaction is still the one the
 * runtime opened, and every audit row in it carries the stamp of the job that wrote it (in a shared
 * transaction, the job whose part it was written in). They catch what the statement guard cannot see: code already in the database that
 * rewrites the audit stamp, or a transaction control statement that got past the guard.
 */

/** The Postgres error code the checks raise. */
const CHECK_FAILED_CODE = "JF003";

/** One invocation's own transaction, as a literal statement (it leads the final record's message). */
export function invocationCheck(stamp: TransactionStamp): string {
  const step = stamp.step === undefined ? "null" : sqlLiteral(stamp.step);
  return `select jetfn.verify_invocation(${sqlLiteral(stamp.functionName)}, ${sqlLiteral(stamp.invocationId)}, ${stamp.attempt}, ${step})`;
}

/** A shared transaction: $1 is {@link groupMembers} of the jobs whose writes it keeps, in the order their parts ran. */
export const GROUP_CHECK_SQL = "select jetfn.verify_group($1::jsonb)";

/**
 * Where a job's part of a shared transaction begins, read last in the message that opens it:
 * its audit rows are those with a higher id, up to the next part's mark (jetfn.verify_group).
 * A function call rather than a SELECT from the sequence: nothing to plan, about a third cheaper.
 * Null (before any row was ever logged) reads as 0: ids start at 1. A secret per job set with the
 * stamp and copied into its rows would need no statement, but a handler can read it: it is in
 * the SQL text, which pg_stat_statements can show, values and all, to the role that ran it.
 */
export const AUDIT_MARK_SQL =
  "select coalesce(pg_catalog.pg_sequence_last_value('jetfn.audit_log_id_seq'::pg_catalog.regclass), 0) as mark";

/**
 * A job whose writes a shared transaction keeps, and where its part began: null for the part that
 * began the transaction (its rows are all those before the next part's mark).
 */
export interface GroupMember {
  stamp: TransactionStamp;
  mark: string | null;
}

/** The mark in the reply to a message that ends with AUDIT_MARK_SQL (one result per statement). */
export function auditMark(reply: unknown): string {
  const results = reply as { mark?: unknown }[][];
  const mark = results.at(-1)?.[0]?.mark;
  if (typeof mark !== "string") throw new JetfnError("E_INTERNAL", "the audit mark was missing from its reply");
  return mark;
}

/** The members of a shared transaction, as GROUP_CHECK_SQL reads them. */
export function groupMembers(members: readonly GroupMember[]): string {
  return JSON.stringify(
    members.map(({ stamp, mark }) => ({
      function: stamp.functionName,
      invocation: stamp.invocationId,
      attempt: stamp.attempt,
      step: stamp.step,
      after: mark,
    })),
  );
}

/** The error a handler's attempt fails with when a check refused its transaction; other errors pass through. */
export function asRefusal(error: unknown): unknown {
  if ((error as { code?: unknown } | undefined)?.code !== CHECK_FAILED_CODE) return error;
  return new JetfnError("E_STATEMENT_REFUSED", (error as Error).message, { cause: error });
}
