import { mapFunctionStack } from "../deploy/function-source-maps";
import { type Duration, parseDuration } from "./duration";
import { isJetfnErrorCode, type JetfnErrorCode } from "./error-codes";

/** One problem found while validating input or output against its zod schema. */
export interface ValidationIssue {
  path: (string | number)[];
  message: string;
  code?: string;
}

/** Options accepted by every jetfn error. */
export interface JetfnErrorOptions extends ErrorOptions {
  issues?: ValidationIssue[];
}

/** Base class of every error the runtime raises; classify by `code`, never by `instanceof`. */
export class JetfnError extends Error {
  readonly code: JetfnErrorCode;
  readonly issues: ValidationIssue[] | undefined;

  constructor(code: JetfnErrorCode, message: string, options?: JetfnErrorOptions) {
    super(message, options);
    this.name = "JetfnError";
    this.code = code;
    this.issues = options?.issues;
  }
}

/**
 * Thrown by a handler to fail the job at once, without retries.
 * @example throw new NonRetryableError(`customer ${id} does not exist`);
 */
export class NonRetryableError extends JetfnError {
  constructor(message: string, options?: ErrorOptions) {
    super("E_NON_RETRYABLE", message, options);
    this.name = "NonRetryableError";
  }
}

/**
 * Thrown by a handler to ask for another attempt after `delay` instead of the policy's backoff.
 * @example throw new RetryAfterError("mail server is rate limiting", "30s");
 */
export class RetryAfterError extends JetfnError {
  readonly delayMs: number;

  constructor(message: string, delay: Duration, options?: ErrorOptions) {
    super("E_RETRY_LATER", message, options);
    this.name = "RetryAfterError";
    this.delayMs = parseDuration(delay);
  }
}

/**
 * Normalises anything a handler throws into a JetfnError. Works by `code`/`name`, not `instanceof`,
 * because function files may carry their own copy of the runtime's classes.
 */
export function toJetfnError(thrown: unknown): JetfnError {
  if (thrown instanceof JetfnError) return copyStack(thrown, thrown);
  if (thrown !== null && typeof thrown === "object") {
    const candidate = thrown as { code?: unknown; message?: unknown; name?: unknown; delayMs?: unknown };
    const message = typeof candidate.message === "string" ? candidate.message : String(thrown);
    if (candidate.name === "NonRetryableError") {
      return copyStack(new NonRetryableError(message, { cause: thrown }), thrown);
    }
    if (candidate.name === "RetryAfterError" && typeof candidate.delayMs === "number") {
      return copyStack(new RetryAfterError(message, candidate.delayMs, { cause: thrown }), thrown);
    }
    if (isJetfnErrorCode(candidate.code)) {
      const issues = (thrown as { issues?: ValidationIssue[] }).issues;
      return copyStack(new JetfnError(candidate.code, message, { cause: thrown, issues }), thrown);
    }
    return copyStack(new JetfnError("E_HANDLER_FAILED", message, { cause: thrown }), thrown);
  }
  return new JetfnError("E_HANDLER_FAILED", `handler threw a non-error value: ${String(thrown)}`, {
    cause: thrown,
  });
}

/**
 * Copies the stack, pointing frames in function files at their source lines; the original error
 * gets the mapped stack too, as logs may print it.
 */
function copyStack<T extends Error>(target: T, source: unknown): T {
  const stack = (source as { stack?: unknown }).stack;
  if (typeof stack !== "string") return target;
  const mapped = mapFunctionStack(stack);
  target.stack = mapped;
  if (mapped !== stack && source !== target) {
    try {
      (source as { stack?: unknown }).stack = mapped;
    } catch {
      // A frozen error keeps its compiled lines; the normalised copy has the source lines.
    }
  }
  return target;
}

/** The original class name of a normalised error (`TypeError`, `NonRetryableError`, ...). */
export function originalErrorName(error: JetfnError): string {
  const cause = error.cause as { name?: unknown; constructor?: { name?: unknown } } | undefined;
  if (cause && typeof cause === "object") {
    if (typeof cause.name === "string") return cause.name;
  }
  return error.name;
}
