import { bigint, integer, jsonb, pgSchema, text, timestamp } from "drizzle-orm/pg-core";

/** Postgres schema holding jetfn's own tables; created by schema/migrations/0001_jetfn_invocations.sql. */
export const jetfnSchema = pgSchema("jetfn");

/** Status of a job invocation. `failed` waits for a retry; `dead` is final until retried by id. */
export type InvocationStatus = "queued" | "running" | "succeeded" | "failed" | "dead" | "dropped";

/** One row per job invocation: its handle, outcome and every attempt's error. */
export const invocations = jetfnSchema.table("invocations", {
  id: text("id").primaryKey(),
  function: text("function").notNull(),
  status: text("status").$type<InvocationStatus>().notNull(),
  attempts: integer("attempts").notNull().default(0),
  input: jsonb("input"),
  result: jsonb("result"),
  error: jsonb("error"),
  errors: jsonb("errors").notNull().default([]),
  progress: jsonb("progress"),
  enqueuedAt: timestamp("enqueued_at", { withTimezone: true, mode: "string" }),
  startedAt: timestamp("started_at", { withTimezone: true, mode: "string" }),
  finishedAt: timestamp("finished_at", { withTimezone: true, mode: "string" }),
  updatedAt: timestamp("updated_at", { withTimezone: true, mode: "string" }).notNull(),
  streamSeq: bigint("stream_seq", { mode: "number" }),
  retryOf: text("retry_of"),
});
