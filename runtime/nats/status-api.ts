import type { NatsConnection, Subscription } from "@nats-io/transport-node";
import type { Logger } from "pino";
import { FINAL_STATUSES } from "../../schema/jetfn";
import type { DatabaseClient } from "../db/client";
import { getInvocation, type InvocationRecord, idConflictError } from "../db/invocation-store";
import { readSteps, type StepRecord } from "../db/step-store";
import { isValidFunctionName } from "../deploy/function-name";
import type { WaitingJob } from "../flow/waiting-jobs";
import { JetfnError } from "../support/errors";
import { replyApiFailure } from "./api-failure";
import type { ScheduledJob } from "./delayed-jobs";
import type { ProgressBoard, ProgressEntry } from "./progress-board";
import { replyJson } from "./reply";
import type { ReplyGuard } from "./reply-guard";
import type { UnrecordedJob } from "./stored-job";
import { isValidInvocationId, STATUS_SUBJECT } from "./subjects";

/** What `status` reports for an invocation id. */
export interface InvocationStatusView {
  id: string;
  /** `pending`: not started yet, or an id no runtime has seen; `scheduled`: a delayed job waiting for `runAt`. */
  status: InvocationRecord["status"] | "pending" | "scheduled" | "waiting";
  function: string | null;
  attempts: number;
  progress: { done: number; total: number | null } | null;
  input?: unknown;
  result?: unknown;
  error?: unknown;
  errors?: unknown[];
  enqueuedAt?: string | null;
  startedAt?: string | null;
  finishedAt?: string | null;
  retryOf?: string | null;
  retriedAs?: string | null;
  retriedAt?: string | null;
  droppedAt?: string | null;
  /** A delayed job's due time (ISO 8601). */
  runAt?: string;
  /** A `sleeping` job's due time (ISO 8601): when its next run starts (docs/durable-steps.md). */
  wakeAt?: string;
  /** A `failed` job's due time (ISO 8601) when a durable step of it failed: its next run tries the step again. */
  retryAt?: string;
  /** What a `waiting` job waits for: `concurrency limit, key k_acme`, `rate limit` (the function's own). */
  waitingFor?: string;
  /**
   * 1-3, as the job was enqueued; absent for the default, 0. Known in every state; for a `pending`
   * job, read from its message in the stream when the request asked (`"stream": true`).
   */
  priority?: number;
  /** The job's debounce key, if it has one (known as `priority` is). */
  debounceKey?: string;
  /** The job's singleton key, if it has one (known as `priority` is). */
  singletonKey?: string;
  /** Its durable steps, in the order first reached, when the request asked (`"steps": true`). */
  steps?: StepRecord[];
}

/** Combines the durable record with live progress into one view. */
export function statusView(
  id: string,
  record: InvocationRecord | undefined,
  live: ProgressEntry | undefined,
): InvocationStatusView {
  const final = record && FINAL_STATUSES.has(record.status);
  if (live && !final) {
    return {
      id,
      status: "running",
      function: live.fn,
      attempts: live.attempt,
      progress: live.done === undefined ? null : { done: live.done, total: live.total ?? null },
      startedAt: live.startedAt,
      // The record exists once an attempt failed; before that the board carries what it knows.
      input: record?.input ?? live.input,
      enqueuedAt: record?.enqueuedAt ?? live.enqueuedAt ?? null,
      errors: record?.errors ?? [],
      ...(live.labels ?? record?.labels),
    };
  }
  if (!record) return { id, status: "pending", function: null, attempts: 0, progress: null };
  return {
    id,
    status: record.status,
    function: record.function,
    attempts: record.attempts,
    progress: null,
    input: record.input,
    result: record.result,
    error: record.error,
    errors: record.errors,
    enqueuedAt: record.enqueuedAt,
    startedAt: record.startedAt,
    finishedAt: record.finishedAt,
    retryOf: record.retryOf,
    retriedAs: record.retriedAs,
    retriedAt: record.retriedAt,
    droppedAt: record.droppedAt,
    ...(record.wakeAt ? { wakeAt: record.wakeAt } : {}),
    ...(record.retryAt ? { retryAt: record.retryAt } : {}),
    ...record.labels,
  };
}

/** A delayed job waiting for its due time. */
export function scheduledView(job: ScheduledJob): InvocationStatusView {
  return {
    id: job.id,
    status: "scheduled",
    function: job.fn,
    attempts: 0,
    progress: null,
    enqueuedAt: job.enqueuedAt,
    runAt: job.runAt,
    ...job.labels,
  };
}

/** A job waiting for a concurrency or rate limit. */
function waitingView(job: WaitingJob): InvocationStatusView {
  return {
    id: job.id,
    status: "waiting",
    function: job.fn,
    attempts: 0,
    progress: null,
    enqueuedAt: job.enqueuedAt,
    waitingFor: job.limit,
    ...job.labels,
  };
}

/** A job cancelled before any runtime recorded it (it ends `cancelled` when delivered). */
function cancelledView(id: string, error: JetfnError): InvocationStatusView {
  const stored = { attempt: 0, code: error.code, name: error.name, message: error.message };
  return { id, status: "cancelled", function: null, attempts: 0, progress: null, error: stored, errors: [stored] };
}

/** Where the status API looks for a job no record or running entry knows (each asked in turn). */
export interface StatusLookups {
  /** Whether a job no record knows yet was cancelled (it ends so when delivered). */
  cancelled: (id: string) => JetfnError | undefined;
  /** A delayed job still waiting for its time. */
  scheduled: (id: string) => Promise<ScheduledJob | undefined>;
  /** A job waiting for a limit. */
  waitingJob: (id: string) => Promise<WaitingJob | undefined>;
  /**
   * A job queued in the jobs stream that no runtime recorded yet, asked only when the request asks
   * for it (`"stream": true`): it reads the stream's backlog. Undefined when it cannot tell. `fn`:
   * the function the request expects, whose job is shown when several messages carry the id.
   */
  queued: (id: string, fn: string | undefined) => Promise<UnrecordedJob | false | undefined>;
}

const NO_LOOKUPS: StatusLookups = {
  cancelled: () => undefined,
  scheduled: async () => undefined,
  waitingJob: async () => undefined,
  queued: async () => undefined,
};

/**
 * Answers `jetfn.api.status` requests (`{"id": "..."}`) from Postgres and the progress board. A
 * request may name the function it expects (`{"id": "...", "function": "..."}`): when the id
 * belongs to another function's invocation, it is answered with E_ID_CONFLICT, never with that
 * invocation's status or result. With `"stream": true`, a `pending` id is also looked for among the
 * jobs stream's unrecorded jobs, whose function, priority and keys the answer then shows. With
 * `"steps": true`, the answer lists the invocation's durable steps (without their results).
 */
export function startStatusApi(
  nc: NatsConnection,
  queueGroup: string,
  database: DatabaseClient,
  progress: ProgressBoard,
  logger: Logger,
  replyGuard: ReplyGuard,
  lookups: Partial<StatusLookups> = {},
): Subscription {
  const look: StatusLookups = { ...NO_LOOKUPS, ...lookups };
  return nc.subscribe(STATUS_SUBJECT, {
    queue: queueGroup,
    callback: (error, message) => {
      if (error || !message.reply || !replyGuard.accepts(message, "status")) return;
      void (async () => {
        try {
          const request = parseRequest(message.data);
          replyJson(message, await statusOf(database, progress, look, request), nc.info?.max_payload ?? 1_048_576);
        } catch (thrown) {
          replyApiFailure(message, thrown, "status", logger);
        }
      })();
    },
  });
}

/** The view of one status request: each place asked in turn, until one knows the id. */
async function statusOf(
  database: DatabaseClient,
  progress: ProgressBoard,
  look: StatusLookups,
  { id, fn, stream, steps }: StatusRequest,
): Promise<InvocationStatusView> {
  // Steps, when asked for, are read beside the record rather than after it: the dashboard asks every second.
  const [record, live, stepRecords] = await Promise.all([
    getInvocation(database, id),
    progress.get(id),
    steps ? readSteps(database, id) : undefined,
  ]);
  // The record says whose id it is; a running job of another function may share it.
  const owner = record?.function ?? live?.fn;
  if (fn !== undefined && owner !== undefined && owner !== fn) throw idConflictError(id, fn, owner);
  // Only a record can have steps: the first step makes it.
  if (record && stepRecords) return { ...statusView(id, record, live), steps: stepRecords };
  if (record || live) return statusView(id, record, live);
  const mark = look.cancelled(id);
  if (mark) return cancelledView(id, mark);
  const waiting = await look.scheduled(id);
  if (waiting) return ownedBy(fn, waiting.fn, id, scheduledView(waiting));
  const held = await look.waitingJob(id);
  if (held) return ownedBy(fn, held.fn, id, waitingView(held));
  const queued = stream ? await look.queued(id, fn) : undefined;
  if (queued) return ownedBy(fn, queued.fn, id, queuedView(id, queued));
  return statusView(id, undefined, undefined);
}

/** The view, unless the request expects another function than the job's (E_ID_CONFLICT). */
function ownedBy(
  expected: string | undefined,
  owner: string | undefined,
  id: string,
  view: InvocationStatusView,
): InvocationStatusView {
  if (expected !== undefined && owner !== undefined && owner !== expected) {
    throw idConflictError(id, expected, owner);
  }
  return view;
}

/** A job queued in the stream, not started: `pending`, with what its message says. */
function queuedView(id: string, job: UnrecordedJob): InvocationStatusView {
  return {
    id,
    status: "pending",
    function: job.fn ?? null,
    attempts: 0,
    progress: null,
    enqueuedAt: job.enqueuedAt,
    ...job.labels,
  };
}

interface StatusRequest {
  id: string;
  fn: string | undefined;
  /** Whether to look for a pending id in the jobs stream. */
  stream: boolean;
  /** Whether to list the invocation's durable steps. */
  steps: boolean;
}

function parseRequest(data: Uint8Array): StatusRequest {
  let body: unknown;
  try {
    body = JSON.parse(new TextDecoder().decode(data));
  } catch {
    throw new JetfnError("E_INPUT_INVALID", 'a status request must be JSON like {"id": "..."}');
  }
  const id = (body as { id?: unknown } | null)?.id;
  if (typeof id !== "string" || !isValidInvocationId(id)) {
    throw new JetfnError("E_INPUT_INVALID", "a status request needs an invocation id (8-128 letters, digits, - or _)");
  }
  const fn = (body as { function?: unknown }).function;
  if (fn !== undefined && (typeof fn !== "string" || !isValidFunctionName(fn))) {
    throw new JetfnError("E_INPUT_INVALID", "a status request's function must be a valid function name");
  }
  const { stream, steps } = body as { stream?: unknown; steps?: unknown };
  return { id, fn, stream: stream === true, steps: steps === true };
}
