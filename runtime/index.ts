// The public API of jetfn: what function files and callers import. Internals stay private.
export { z } from "zod";
export type { AnyPgDatabase, AuditChainBreak, AuditEntry, AuditFilter, AuditSealStatus } from "./audit-queries";
export { auditSealStatus, invocationChanges, listAuditEntries, rowHistory, verifyAuditChain } from "./audit-queries";
export type {
  CallErrorDetails,
  CallOptions,
  ClientOptions,
  EnqueueJobOptions,
  FunctionMap,
  JetfnClient,
  ResultOptions,
} from "./client";
export { createClient } from "./client";
export type {
  EnqueueOptions,
  FunctionContext,
  FunctionDefinition,
  FunctionSpec,
  InputOf,
  InvocationDatabase,
  OutputOf,
} from "./define-function";
export { defineFunction } from "./define-function";
export type { Duration } from "./duration";
export type { JetfnErrorCode, ValidationIssue } from "./errors";
export { JetfnError, NonRetryableError, RetryAfterError } from "./errors";
export type { PublishedJob } from "./nats/publish-job";
export type { InvocationStatusView } from "./nats/status-api";
export type { RetryOptions } from "./retry-policy";
