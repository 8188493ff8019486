import type { NatsConnection, Subscription } from "@nats-io/transport-node";
import type { Logger } from "pino";
import { FINAL_STATUSES } from "../../schema/jetfn";
import type { DatabaseClient } from "../db/client";
import { getInvocation, recordCancelled } from "../db/invocation-store";
import {
  CANCEL_SUBJECT,
  type Cancellations,
  type CancelMark,
  cancelledError,
  REASON_LIMIT,
} from "../invocation/cancellation";
import { storedError } from "../invocation/job-endings";
import { JetfnError } from "../support/errors";
import { replyApiFailure } from "./api-failure";
import type { ScheduledJob } from "./delayed-jobs";
import type { ProgressBoard } from "./progress-board";
import { replyJson } from "./reply";
import type { ReplyGuard } from "./reply-guard";
import { doneSubject, isValidInvocationId } from "./subjects";

/** What the cancel API answers: the job and its status once cancelled. */
export interface CancelReply {
  id: string;
  status: "cancelled";
  function: string | null;
}

/** What the cancel API needs from the runtime. */
export interface CancelApiOptions {
  nc: NatsConnection;
  queueGroup: string;
  database: DatabaseClient;
  progress: ProgressBoard;
  cancellations: Cancellations;
  /** Looks up (and removes) a delayed job still waiting for its time. */
  scheduled: { find(id: string): Promise<ScheduledJob | undefined>; remove(job: ScheduledJob): Promise<void> };
  logger: Logger;
  replyGuard: ReplyGuard;
}

const DEFAULT_REASON = "cancelled on request";

/**
 * Answers `jetfn.api.cancel` (`{"id": "...", "reason"?: "..."}`): refuses a job that already ended
 * (E_NOT_CANCELLABLE); otherwise writes the cancel mark (every runtime hears of it: a running
 * attempt is aborted, a queued one ends without running) and, when the job's function is known,
 * its `cancelled` record, which fences out an attempt finishing after it.
 */
export function startCancelApi(options: CancelApiOptions): Subscription {
  const { nc, replyGuard, logger } = options;
  return nc.subscribe(CANCEL_SUBJECT, {
    queue: options.queueGroup,
    callback: (error, message) => {
      if (error || !message.reply || !replyGuard.accepts(message, "cancel")) return;
      void (async () => {
        try {
          const { id, reason } = parseRequest(message.data);
          replyJson(message, await cancel(options, id, reason), nc.info?.max_payload ?? 1_048_576);
        } catch (thrown) {
          replyApiFailure(message, thrown, "cancel", logger);
        }
      })();
    },
  });
}

async function cancel(options: CancelApiOptions, id: string, reason: string): Promise<CancelReply> {
  const [record, live] = await Promise.all([getInvocation(options.database, id), options.progress.get(id)]);
  if (record?.status === "cancelled") return { id, status: "cancelled", function: record.function };
  if (record && FINAL_STATUSES.has(record.status)) throw notCancellable(id, record.status);
  const scheduled = record || live ? undefined : await options.scheduled.find(id);
  const fn = record?.function ?? live?.fn ?? scheduled?.fn;
  await options.cancellations.mark(id, reason);
  const mark: CancelMark = { reason, at: new Date().toISOString() };
  const stored = storedError(cancelledError(id, mark), record?.attempts ?? 0);
  if (fn !== undefined && !(await recordCancelled(options.database.sql, id, fn, stored))) {
    const now = await getInvocation(options.database, id);
    throw notCancellable(id, now?.status ?? "finished");
  }
  if (scheduled) await options.scheduled.remove(scheduled).catch(() => undefined);
  // A running attempt announces its own end once aborted; waiters on any other job learn it here.
  if (!live && fn !== undefined) {
    options.nc.publish(doneSubject(id), JSON.stringify({ id, fn, status: "cancelled", error: stored }));
  }
  options.logger.info({ invocationId: id, fn, reason }, "Job cancelled.");
  return { id, status: "cancelled", function: fn ?? null };
}

function notCancellable(id: string, status: string): JetfnError {
  return new JetfnError("E_NOT_CANCELLABLE", `job ${id} cannot be cancelled: it already ended (${status})`);
}

function parseRequest(data: Uint8Array): { id: string; reason: string } {
  let body: unknown;
  try {
    body = JSON.parse(new TextDecoder().decode(data));
  } catch {
    throw new JetfnError("E_INPUT_INVALID", 'a cancel request must be JSON like {"id": "..."}');
  }
  const id = (body as { id?: unknown } | null)?.id;
  if (typeof id !== "string" || !isValidInvocationId(id)) {
    throw new JetfnError("E_INPUT_INVALID", "a cancel request needs an invocation id (8-128 letters, digits, - or _)");
  }
  const reason = (body as { reason?: unknown }).reason;
  if (reason !== undefined && typeof reason !== "string") {
    throw new JetfnError("E_INPUT_INVALID", "a cancel request's reason must be a string");
  }
  return { id, reason: (reason || DEFAULT_REASON).slice(0, REASON_LIMIT) };
}
