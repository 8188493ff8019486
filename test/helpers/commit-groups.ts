import postgres, { type ReservedSql, type Sql } from "postgres";
import { completionStatement, type JobRecord } from "../../runtime/db/invocation-store";
import type { InvocationTransaction } from "../../runtime/db/invocation-transaction";
import type { FinalStatement } from "../../runtime/db/transaction-parts";
import { createTestDatabase, type TestDatabase } from "./database";

/**
 * What the commit-group tests share: a database with the tables their jobs write (in public, so
 * the audit triggers attach) and a pool for the jobs' transactions.
 */
export async function createGroupedDatabase(): Promise<{ database: TestDatabase; pool: Sql }> {
  const database = await createTestDatabase();
  const pool = postgres(database.url, { max: 10, onnotice: () => {} });
  await database.sql.unsafe("create table grouped_rows (id text primary key, n integer not null)");
  await database.sql.unsafe(
    "create table deferred_rows (id text primary key, twin text unique deferrable initially deferred)",
  );
  return { database, pool };
}

/** The record of attempt `attempt` of job `id`, a job of `grouped-writer`. */
export function jobRecord(id: string, attempt: number): JobRecord {
  return {
    id,
    fn: "grouped-writer",
    attempt,
    input: {},
    enqueuedAt: new Date().toISOString(),
    startedAt: new Date().toISOString(),
    streamSeq: 1,
    retryOf: undefined,
  };
}

/** The final statement that records that attempt as succeeded (the fence included). */
export function finalRecord(id: string, attempt: number): FinalStatement {
  return completionStatement(jobRecord(id, attempt), "null");
}

/** Runs `body` and ends the transaction as invoke() does: rolled back when the body throws. */
export async function settle(tx: InvocationTransaction, body: () => Promise<void>): Promise<void> {
  try {
    await body();
  } catch (error) {
    await tx.rollback();
    throw error;
  }
}

/**
 * Another copy of job `id` writes its record and does not commit yet: a final record of the same
 * job waits for its row lock. End it with `commit` or `rollback`, then `release()`.
 */
export async function holdRecord(pool: Sql, id: string): Promise<ReservedSql> {
  const holder = await pool.reserve();
  await holder.unsafe("begin");
  const held = finalRecord(id, 1);
  await holder.unsafe(held.text, held.params as never[]);
  return holder;
}
