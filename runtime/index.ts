// The public API of jetfn: what function files and callers import. Internals stay private.
export { z } from "zod";
export type { AnyPgDatabase, AuditChainBreak, AuditEntry, AuditFilter, AuditSealStatus } from "./audit/audit-queries";
export {
  auditSealStatus,
  invocationChanges,
  listAuditEntries,
  rowHistory,
  verifyAuditChain,
} from "./audit/audit-queries";
export type { AuditVerification, VerifyAuditOptions } from "./audit/audit-verify";
export { verifyAudit } from "./audit/audit-verify";
export type { DeadLetter } from "./db/dead-letters";
export type { OutboxJobOptions, OutboxLag, OutboxTransaction, OutboxWriteOptions } from "./db/outbox";
export { emitInTransaction, enqueueInTransaction, readOutboxLag } from "./db/outbox";
export type { DebounceOptions, EnqueuedJob, FlowControlOptions } from "./flow/keyed-enqueue-request";
export type { ErrorCounts } from "./invocation/invocation-stats";
export type { DelayOptions } from "./invocation/job-delay";
export type { RetryOptions } from "./invocation/retry-policy";
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
  RetryDeadLetterOptions,
} from "./sdk/client";
export { createClient } from "./sdk/client";
export type { EventDataOf, EventDefinition } from "./sdk/define-event";
export { defineEvent } from "./sdk/define-event";
export type {
  EnqueueOptions,
  FunctionContext,
  FunctionDefinition,
  FunctionSpec,
  InputOf,
  InvocationDatabase,
  Jsonified,
  OutputOf,
  Register,
  RegisteredSchema,
  StepContext,
  StepOptions,
  WaitedEvent,
} from "./sdk/define-function";
export { defineFunction } from "./sdk/define-function";
export type { Duration } from "./support/duration";
export type { DurationHistogram, DurationSummary } from "./support/duration-histogram";
export type { ErrorKind, JetfnErrorCode } from "./support/error-codes";
export type { ValidationIssue } from "./support/errors";
export { JetfnError, NonRetryableError, RetryAfterError } from "./support/errors";
export type { CatchUpPolicy, ScheduleOption } from "./triggers/schedule";
export type { ScheduleView } from "./triggers/scheduler";
export { readSchedules } from "./triggers/scheduler";
