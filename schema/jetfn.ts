import { bigint, integer, json, jsonb, pgSchema, primaryKey, smallint, text, timestamp } from "drizzle-orm/pg-core";

/** Postgres schema holding jetfn's own tables; created by schema/migrations/0001_jetfn_baseline.sql. */
export const jetfnSchema = pgSchema("jetfn");

/** Status of a job invocation. `failed` waits for a retry; `dead` is final until retried by id. */
export type InvocationStatus =
  | "queued"
  | "running"
  | "succeeded"
  | "failed"
  | "dead"
  | "dropped"
  | "cancelled"
  | "superseded"
  /** At a durable sleep: its resumption waits for `wake_at` (docs/durable-steps.md). */
  | "sleeping"
  /** At a durable wait: for an event that matches, or its timeout at `wake_at` (docs/durable-steps.md). */
  | "awaiting";

/** Statuses a job does not leave by itself: the same list as `jetfn.is_final(status)` in SQL. */
export const FINAL_STATUSES: ReadonlySet<string> = new Set<InvocationStatus>([
  "succeeded",
  "dead",
  "dropped",
  "cancelled",
  "superseded",
]);

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
  /** Id of the job that re-ran this dead one (schema/migrations/0001_jetfn_baseline.sql). */
  retriedAs: text("retried_as"),
  retriedAt: timestamp("retried_at", { withTimezone: true, mode: "string" }),
  /** When a dead job was discarded with `jetfn dlq drop` (status `dropped`). */
  droppedAt: timestamp("dropped_at", { withTimezone: true, mode: "string" }),
  /** 1-3 as enqueued; null for the default, 0 (schema/migrations/0029_jetfn_invocation_labels.sql). */
  priority: smallint("priority"),
  /** The debounce key it was enqueued with, if any. */
  debounceKey: text("debounce_key"),
  /** The singleton key it was enqueued with, if any. */
  singletonKey: text("singleton_key"),
  /**
   * The token of the resumption that may run the invocation on (`<seq>s<n>`: the sleep recorded as
   * step seq, set the n-th time); null until it first sleeps (schema/migrations/0034_jetfn_sleep.sql).
   */
  resume: text("resume"),
  /** Attempts spent before that resumption: its attempt is this plus its deliveries. */
  resumeAttempts: integer("resume_attempts"),
  /** When a sleeping invocation is due. */
  wakeAt: timestamp("wake_at", { withTimezone: true, mode: "string" }),
});

/**
 * One row per durable step an invocation reached: its memo (docs/durable-steps.md,
 * schema/migrations/0032_jetfn_steps.sql). Written only by jetfn.record_step, suspend_invocation and
 * record_step_failure.
 */
export const steps = jetfnSchema.table(
  "steps",
  {
    invocationId: text("invocation_id").notNull(),
    /** The step's name, or `name#n` for its n-th call in a run. */
    key: text("key").notNull(),
    /** 1, 2, ... in the order first recorded. */
    seq: integer("seq").notNull(),
    kind: text("kind").$type<"step" | "sleep" | "wait" | "patch">().notNull(),
    status: text("status").notNull(),
    attempts: integer("attempts").notNull().default(0),
    result: jsonb("result"),
    error: jsonb("error"),
    errors: jsonb("errors").notNull().default([]),
    wakeAt: timestamp("wake_at", { withTimezone: true, mode: "string" }),
    event: text("event"),
    matchPaths: text("match_paths").array(),
    matchValues: jsonb("match_values"),
    afterAt: timestamp("after_at", { withTimezone: true, mode: "string" }),
    eventId: text("event_id"),
    /** A wait's: when the events stored before it began were read (0037). */
    caughtUpAt: timestamp("caught_up_at", { withTimezone: true, mode: "string" }),
    codeVersion: text("code_version"),
    txid: bigint("txid", { mode: "number" }),
    startedAt: timestamp("started_at", { withTimezone: true, mode: "string" }),
    finishedAt: timestamp("finished_at", { withTimezone: true, mode: "string" }),
    updatedAt: timestamp("updated_at", { withTimezone: true, mode: "string" }).notNull(),
  },
  (table) => [primaryKey({ columns: [table.invocationId, table.key] })],
);

/** Columns of jetfn.audit_log (and of its unsealed tail, jetfn.audit_tail). */
function auditLogColumns() {
  return {
    id: bigint("id", { mode: "number" }).notNull(),
    loggedAt: timestamp("logged_at", { withTimezone: true, mode: "string" }).notNull(),
    txid: bigint("txid", { mode: "number" }).notNull(),
    function: text("function"),
    invocationId: text("invocation_id"),
    attempt: integer("attempt"),
    dbUser: text("db_user").notNull(),
    schemaName: text("schema_name").notNull(),
    tableName: text("table_name").notNull(),
    operation: text("operation").$type<"INSERT" | "UPDATE" | "DELETE" | "TRUNCATE">().notNull(),
    /** json, not jsonb: stored as built, cheaper to write (schema/migrations/0001_jetfn_baseline.sql). */
    pk: json("pk"),
    oldRow: json("old_row"),
    newRow: json("new_row"),
    changedColumns: text("changed_columns").array(),
    /** The key of the durable step that wrote the row (docs/durable-steps.md); null outside steps. */
    step: text("step"),
  };
}

/**
 * One changed row (or one TRUNCATE), written by the audit triggers. Append-only for the runtime; no
 * primary key (ids come from a sequence), rows are found through a BRIN index on (txid, id, logged_at).
 */
export const auditLog = jetfnSchema.table("audit_log", auditLogColumns());

/**
 * The rows of jetfn.audit_log not sealed yet, read through its BRIN index whatever the planner
 * guesses (jetfn.audit_tail_rows in schema/migrations/0001_jetfn_baseline.sql).
 */
export const auditTail = jetfnSchema.view("audit_tail", auditLogColumns()).existing();

/**
 * Lookup entries of sealed audit rows (function, invocation, row key), written by the sealer so
 * audited writes maintain no such index themselves (schema/migrations/0001_jetfn_baseline.sql).
 */
export const auditLookup = jetfnSchema.table("audit_lookup", {
  id: bigint("id", { mode: "number" }).notNull(),
  /** The row's txid, to fetch it from jetfn.audit_log through its BRIN index (null only if added by hand). */
  txid: bigint("txid", { mode: "number" }),
  loggedAt: timestamp("logged_at", { withTimezone: true, mode: "string" }).notNull(),
  function: text("function"),
  invocationId: text("invocation_id"),
  schemaName: text("schema_name").notNull(),
  tableName: text("table_name").notNull(),
  pk: jsonb("pk"),
});

/** Seals of the audit hash chain: each covers a range of rows and chains from the previous. */
export const auditSeals = jetfnSchema.table("audit_seals", {
  seq: bigint("seq", { mode: "number" }).primaryKey(),
  sealedAt: timestamp("sealed_at", { withTimezone: true, mode: "string" }).notNull(),
  rowCount: integer("row_count").notNull(),
  hash: text("hash").notNull(),
});

/** Messages waiting to be published once their transaction committed (the transactional outbox). */
export const outbox = jetfnSchema.table("outbox", {
  position: bigint("position", { mode: "number" }).primaryKey().generatedAlwaysAsIdentity(),
  id: text("id").notNull().unique(),
  subject: text("subject").notNull(),
  headers: jsonb("headers").$type<Record<string, string>>().notNull().default({}),
  body: text("body").notNull(),
  function: text("function"),
  invocationId: text("invocation_id"),
  createdAt: timestamp("created_at", { withTimezone: true, mode: "string" }).notNull(),
});

/** Outbox rows the relay refused to publish, with why (schema/migrations/0001_jetfn_baseline.sql). */
export const outboxSetAside = jetfnSchema.table("outbox_set_aside", {
  /** The row's position in jetfn.outbox; ids may repeat here. */
  position: bigint("position", { mode: "number" }).primaryKey(),
  id: text("id").notNull(),
  subject: text("subject").notNull(),
  headers: jsonb("headers").$type<Record<string, unknown>>().notNull(),
  body: text("body").notNull(),
  function: text("function"),
  invocationId: text("invocation_id"),
  createdAt: timestamp("created_at", { withTimezone: true, mode: "string" }).notNull(),
  reason: text("reason").notNull(),
  setAsideAt: timestamp("set_aside_at", { withTimezone: true, mode: "string" }).notNull(),
});
