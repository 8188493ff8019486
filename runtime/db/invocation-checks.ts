import { JetfnError } from "../errors";
import { sqlLiteral } from "./sql-literal";
import type { TransactionStamp } from "./transaction-parts";

/**
 * The checks made just before the runtime commits a transaction its handlers' statements ran in
 * (schema/migrations/0019_jetfn_invocation_checks.sql): the transaction is still the one the
 * runtime opened, and every audit row in it names a job it completes, under that job's function
 * and attempt. They catch what the statement guard cannot see: code already in the database that
 * rewrites the audit stamp, or a transaction control statement that got past the guard.
 */

/** The Postgres error code the checks raise. */
const CHECK_FAILED_CODE = "JF003";

/** One invocation's own transaction, as a literal statement (it leads the final record's message). */
export function invocationCheck(stamp: TransactionStamp): string {
  return `select jetfn.verify_invocation(${sqlLiteral(stamp.functionName)}, ${sqlLiteral(stamp.invocationId)}, ${stamp.attempt})`;
}

/** A shared transaction: $1 is {@link groupMembers} of the jobs whose writes it keeps. */
export const GROUP_CHECK_SQL = "select jetfn.verify_group($1::jsonb)";

/** The members of a shared transaction, as GROUP_CHECK_SQL reads them. */
export function groupMembers(stamps: readonly TransactionStamp[]): string {
  return JSON.stringify(
    stamps.map((stamp) => ({ function: stamp.functionName, invocation: stamp.invocationId, attempt: stamp.attempt })),
  );
}

/** The error a handler's attempt fails with when a check refused its transaction; other errors pass through. */
export function asRefusal(error: unknown): unknown {
  if ((error as { code?: unknown } | undefined)?.code !== CHECK_FAILED_CODE) return error;
  return new JetfnError("E_STATEMENT_REFUSED", (error as Error).message, { cause: error });
}
