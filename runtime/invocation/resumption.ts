import type { JsMsg } from "@nats-io/jetstream";
import type { Logger } from "pino";
import { type JobRecord, resumeInvocation } from "../db/invocation-store";
import { headerValue } from "../nats/header-value";
import { ID_HEADER, isValidInvocationId } from "../nats/subjects";
import type { ResolvedFunction } from "../sdk/define-function";
import { isoNow } from "../support/clock";
import { JetfnError } from "../support/errors";
import { invocationLogger } from "../support/logger";
import type { Cancellations } from "./cancellation";
import { whenDatabaseAnswers } from "./database-outage";
import { endCancelled, type JobEndingDependencies, refuse } from "./job-endings";
import { readResume } from "./resume-tag";

/**
 * The run a durable sleep's resumption starts (docs/durable-steps.md): a job message whose
 * `Jetfn-Resume` header (`header`) names the token that may run the invocation on. Resolves to the
 * run's record (its input, attempt and labels read from the invocation's record, never from the
 * message, whose body is empty) once the record is `running`; or to undefined once the message was
 * ended instead: a header that does not verify (E_RESUME_INVALID, dropped unread), an invocation that
 * ended meanwhile (cancelled while it slept, say) or that another token owns (a stale copy), or
 * attempts used up.
 */
export async function resumedRun(
  deps: JobEndingDependencies & { resumeSecret?: string; cancellations?: Cancellations },
  fn: ResolvedFunction,
  message: JsMsg,
  header: string,
  /** For a resumption woken after waiting for a limit: the attempts it had spent (it keeps its attempt). */
  attemptsBefore: number | undefined,
): Promise<{ record: JobRecord; log: Logger } | undefined> {
  const id = headerValue(message.headers, ID_HEADER) ?? "";
  const delivery = message.info.deliveryCount;
  const woken = attemptsBefore === undefined ? undefined : delivery + attemptsBefore;
  const token =
    deps.resumeSecret !== undefined && isValidInvocationId(id)
      ? readResume(deps.resumeSecret, fn.name, id, header)
      : undefined;
  if (token === undefined) {
    const error = new JetfnError("E_RESUME_INVALID", "a Jetfn-Resume header that no runtime wrote");
    deps.logger.error(
      { fn: fn.name, code: error.code, subject: message.subject, seq: message.seq },
      "A job message carried a Jetfn-Resume header that does not verify; it was dropped without running.",
    );
    message.term();
    return undefined;
  }
  const log = invocationLogger(deps.logger, fn.name, id, woken ?? delivery);
  const cancelled = deps.cancellations?.cancelled(id);
  if (cancelled) {
    await endCancelled(deps, unread(fn, id, woken ?? delivery, token, message), message, cancelled, log);
    return undefined;
  }
  const resumed = await whenDatabaseAnswers(deps, log, () =>
    resumeInvocation(deps.database.sql, id, fn.name, token, delivery, woken),
  );
  if (resumed.outcome !== "run") {
    if (resumed.outcome === "ended" || resumed.outcome === "stale") {
      message.ack();
      log.info(
        { outcome: resumed.outcome },
        resumed.outcome === "ended"
          ? "The job had ended before this resumption came (a wait's timeout after its event, a cancel); it is not run."
          : "A newer run owns this job; this resumption is stale and is not run.",
      );
    } else {
      message.term();
      log.warn({ outcome: resumed.outcome }, "A resumption's job has no record of this function; it is not run.");
    }
    return undefined;
  }
  const { record } = resumed;
  const runLog = invocationLogger(deps.logger, fn.name, id, record.attempt);
  if (record.attempt > fn.retry.attempts) {
    const error = new JetfnError(
      "E_ATTEMPTS_EXHAUSTED",
      `all ${fn.retry.attempts} attempts were used, and the last one never reported back (the runtime stopped or lost the job's lease)`,
    );
    await refuse(deps, record, message, error, runLog);
    return undefined;
  }
  return { record, log: runLog };
}

/** What is known of a resumption's job before its record is read. */
function unread(fn: ResolvedFunction, id: string, attempt: number, token: string, message: JsMsg): JobRecord {
  const now = isoNow();
  return {
    id,
    fn: fn.name,
    attempt,
    input: null,
    enqueuedAt: now,
    startedAt: now,
    streamSeq: message.seq,
    retryOf: undefined,
    resume: token,
  };
}
