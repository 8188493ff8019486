// The public API of jetfn: what function files and callers import. Internals stay private.
export { z } from "zod";
export type { AnyPgDatabase, AuditChainBreak, AuditEntry, AuditFilter, AuditSealStatus } from "./audit-queries";
export { auditSealStatus, invocationChanges, listAuditEntries, rowHistory, verifyAuditChain } from "./audit-queries";
export type { AuditVerification, VerifyAuditOptions } from "./audit-verify";
export { verifyAudit } from "./audit-verify";
export type {
  CallErrorDetails,
  CallOptions,
  CancelOptions,
  ClientOptions,
  DeadLetterQuery,
  EmitOptions,
  EmittedEvent,
  EnqueueJobOptions,
  FunctionMap,
  JetfnClient,
  ResultOptions,
} from "./client";
export { createClient } from "./client";
export type { DeadLetter } from "./db/dead-letters";
export type { OutboxJobOptions, OutboxLag, OutboxTransaction, OutboxWriteOptions } from "./db/outbox";
export { emitInTransaction, enqueueInTransaction, readOutboxLag } from "./db/outbox";
export type { EventDataOf, EventDefinition } from "./define-event";
export { defineEvent } from "./define-event";
export type {
  EnqueueOptions,
  FunctionContext,
  FunctionDefinition,
  FunctionSpec,
  InputOf,
  InvocationDatabase,
  OutputOf,
  Register,
  RegisteredSchema,
} from "./define-function";
export { defineFunction } from "./define-function";
export type { Duration } from "./duration";
export type { DurationHistogram, DurationSummary } from "./duration-histogram";
export type { ErrorKind, JetfnErrorCode } from "./error-codes";
export type { ValidationIssue } from "./errors";
export { JetfnError, NonRetryableError, RetryAfterError } from "./errors";
export type { ErrorCounts } from "./invocation-stats";
export type { DelayOptions } from "./job-delay";
export type { CancelReply } from "./nats/cancel-api";
export type { DropReply, RetriedJob } from "./nats/dead-letter-api";
export type { PublishedJob } from "./nats/publish-job";
export type {
  EndpointData,
  EndpointInfo,
  EndpointStats,
  ProcessData,
  ServiceInfo,
  ServicePing,
  ServiceStats,
} from "./nats/service-discovery";
export type { InvocationStatusView } from "./nats/status-api";
export type { RetryOptions } from "./retry-policy";
export type { CatchUpPolicy, ScheduleOption } from "./schedule";
export type { ScheduleView } from "./scheduler";
export { readSchedules } from "./scheduler";
