import { headers, type Msg } from "@nats-io/transport-node";
import { statusOf } from "../support/error-codes";
import type { JetfnError } from "../support/errors";
import { ERROR_CODE_HEADER, ERROR_HEADER, ID_HEADER } from "./subjects";

/** The JSON body of an error reply. */
export interface ErrorReplyBody {
  error: { code: string; message: string; issues?: unknown[] };
}

/** HTTP-like status carried in `Nats-Service-Error-Code` for an error. */
export function statusFor(error: JetfnError): number {
  return statusOf(error.code);
}

/** Replies with a JSON value; reports a reply above the server's max payload as an error instead. */
export function replyJson(message: Msg, value: unknown, maxPayload: number, invocationId?: string): void {
  const body = new TextEncoder().encode(JSON.stringify(value ?? null));
  if (body.length > maxPayload - 512) {
    replyError(message, 413, {
      code: "E_PAYLOAD_TOO_LARGE",
      message: `the result is ${body.length} bytes; the NATS server accepts at most ${maxPayload} bytes per message`,
    });
    return;
  }
  const header = headers();
  if (invocationId) header.set(ID_HEADER, invocationId);
  message.respond(body, { headers: header });
}

/** Replies with the services-convention error headers and a `{"error": ...}` body. */
export function replyError(
  message: Msg,
  status: number,
  error: { code: string; message: string; issues?: unknown[] | undefined },
  invocationId?: string,
): void {
  const header = headers();
  header.set(ERROR_CODE_HEADER, String(status));
  // Header values are single-line; the body keeps the full message.
  header.set(ERROR_HEADER, error.message.replace(/[\r\n]+/g, " ").slice(0, 1_000));
  if (invocationId) header.set(ID_HEADER, invocationId);
  const body: ErrorReplyBody = { error: { code: error.code, message: error.message } };
  if (error.issues) body.error.issues = error.issues;
  message.respond(JSON.stringify(body), { headers: header });
}
