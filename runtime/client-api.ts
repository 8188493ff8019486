// What an app imports as `jetfn/client` to call, enqueue, emit and wait: a second public entry,
// because an app's web server must not load the runtime, esbuild or the embedded Postgres.

export type { DeadLetter } from "./db/dead-letters";
export type { OutboxJobOptions, OutboxLag, OutboxTransaction, OutboxWriteOptions } from "./db/outbox";
export { emitInTransaction, enqueueInTransaction, readOutboxLag } from "./db/outbox";
export type { DebounceOptions, EnqueuedJob, FlowControlOptions } from "./flow/keyed-enqueue-request";
export type { DelayOptions } from "./invocation/job-delay";
export type { CancelReply } from "./nats/cancel-api";
export type { DropReply, RetriedJob } from "./nats/dead-letter-api";
export type { PublishedJob } from "./nats/publish-job";
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
} from "./sdk/client";
export { createClient } from "./sdk/client";
export type { EventDataOf, EventDefinition } from "./sdk/define-event";
export { defineEvent } from "./sdk/define-event";
export type { FunctionDefinition, InputOf, OutputOf } from "./sdk/define-function";
export type { Duration } from "./support/duration";
export type { JetfnErrorCode } from "./support/error-codes";
export type { ValidationIssue } from "./support/errors";
export { JetfnError } from "./support/errors";
