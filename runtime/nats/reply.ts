import { headers, type Msg } from "@nats-io/transport-node";
import type { JetfnError, JetfnErrorCode } from "../errors";
import { ERROR_CODE_HEADER, ERROR_HEADER, ID_HEADER } from "./subjects";

/** The JSON body of an error reply. */
export interface ErrorReplyBody {
  error: { code: string; message: string; issues?: unknown[] };
}

const STATUS_BY_CODE: Partial<Record<JetfnErrorCode, number>> = {
  E_INPUT_INVALID: 400,
  E_PAYLOAD_TOO_LARGE: 413,
  E_FUNCTION_NOT_FOUND: 404,
  E_NOT_FOUND: 404,
  E_NOT_DEAD: 409,
  E_CANCELLED: 409,
  E_NOT_CANCELLABLE: 409,
  E_ID_CONFLICT: 409,
  E_HANDLER_TIMEOUT: 408,
  E_SHUTTING_DOWN: 503,
  E_UNAVAILABLE: 503,
  E_DATABASE_UNAVAILABLE: 503,
};

/** HTTP-like status carried in `Nats-Service-Error-Code` for an error. */
export function statusFor(error: JetfnError): number {
  return STATUS_BY_CODE[error.code] ?? 500;
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
