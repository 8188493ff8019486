import type { Msg } from "@nats-io/transport-node";
import type { Logger } from "pino";
import { hasConnectionErrorCause } from "../db/client";
import { JetfnError, toJetfnError } from "../support/errors";
import { replyError, statusFor } from "./reply";

/**
 * Answers a `jetfn.api.*` request that failed. One that met a Postgres restart or a lost
 * connection is answered as retryable (503 E_DATABASE_UNAVAILABLE, which a client may ask again
 * after) with a warning, not as a failure of the API (500, logged as an error). `request` names
 * the request: "status", "cancel", "dead-letter".
 */
export function replyApiFailure(message: Msg, thrown: unknown, request: string, logger: Logger): void {
  const failure = apiFailure(thrown, request);
  const fields = { err: thrown, subject: message.subject };
  if (failure.code === "E_HANDLER_FAILED") logger.error(fields, `A ${request} request failed.`);
  if (failure.code === "E_DATABASE_UNAVAILABLE") logger.warn(fields, failure.message);
  replyError(message, statusFor(failure), failure);
}

function apiFailure(thrown: unknown, request: string): JetfnError {
  if (!hasConnectionErrorCause(thrown)) return toJetfnError(thrown);
  const message = `Postgres is unreachable; the ${request} request can be asked again once it answers.`;
  return new JetfnError("E_DATABASE_UNAVAILABLE", message, { cause: thrown });
}
