import type { Msg } from "@nats-io/transport-node";
import type { Logger } from "pino";
import { hasConnectionErrorCause } from "../db/client";
import { JetfnError, toJetfnError } from "../support/errors";
import { replyError, statusFor } from "./reply";

/**
 * Answers a `jetfn.api.*` request that failed. One that met a Postgres restart or a lost
 * connection is answered as retryable (503 E_DATABASE_UNAVAILABLE, which a client may ask again
 * after) with a warning, not as a failure of the API (500, logged as an error); so is one whose
 * request to NATS (a key-value bucket, a stream) timed out or found nothing answering (503
 * E_UNAVAILABLE). `request` names the request: "status", "cancel", "dead-letter", "enqueue".
 */
export function replyApiFailure(
  message: Msg,
  thrown: unknown,
  request: string,
  logger: Logger,
  /** The id the answer names (`Jetfn-Id`), for a request whose job may exist. */
  invocationId?: string,
): void {
  const unavailable = unavailableFailure(thrown, request);
  const failure = unavailable ?? toJetfnError(thrown);
  const fields = { err: thrown, subject: message.subject };
  if (unavailable) logger.warn(fields, unavailable.message);
  else if (failure.code === "E_HANDLER_FAILED") logger.error(fields, `A ${request} request failed.`);
  replyError(message, statusFor(failure), failure, invocationId);
}

/** Names nats.js gives errors of a request that NATS did not answer: it may answer when asked again. */
const NATS_UNANSWERED = new Set([
  "TimeoutError",
  "NoResponders",
  "RequestError",
  "ClosedConnectionError",
  "DrainingConnectionError",
  "ConnectionError",
]);

/** The retryable failure of a request that met Postgres or NATS away; undefined for any other failure. */
function unavailableFailure(thrown: unknown, request: string): JetfnError | undefined {
  if (hasConnectionErrorCause(thrown)) {
    const message = `Postgres is unreachable; the ${request} request can be asked again once it answers.`;
    return new JetfnError("E_DATABASE_UNAVAILABLE", message, { cause: thrown });
  }
  if (thrown instanceof Error && !(thrown instanceof JetfnError) && NATS_UNANSWERED.has(thrown.name)) {
    const message = `NATS did not answer (${thrown.message}); the ${request} request can be asked again.`;
    return new JetfnError("E_UNAVAILABLE", message, { cause: thrown });
  }
  return undefined;
}
