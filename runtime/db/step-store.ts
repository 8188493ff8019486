import { asc, eq } from "drizzle-orm";
import { steps } from "../../schema/jetfn";
import type { DatabaseClient } from "./client";
import { isoTimestamp } from "./invocation-store";

/** A durable step as `status` shows it (docs/durable-steps.md#what-operators-see). */
export interface StepRecord {
  key: string;
  seq: number;
  kind: string;
  status: string;
  attempts: number;
  /** A wait's event name. */
  event?: string;
  startedAt: string | null;
  finishedAt: string | null;
}

/** The steps an invocation recorded, in the order they were first reached; their results are left out. */
export async function readSteps(client: DatabaseClient, invocationId: string): Promise<StepRecord[]> {
  const rows = await client.db
    .select({
      key: steps.key,
      seq: steps.seq,
      kind: steps.kind,
      status: steps.status,
      attempts: steps.attempts,
      event: steps.event,
      startedAt: steps.startedAt,
      finishedAt: steps.finishedAt,
    })
    .from(steps)
    .where(eq(steps.invocationId, invocationId))
    .orderBy(asc(steps.seq));
  return rows.map(({ event, ...row }) => ({
    ...row,
    ...(event === null ? {} : { event }),
    startedAt: isoTimestamp(row.startedAt),
    finishedAt: isoTimestamp(row.finishedAt),
  }));
}
