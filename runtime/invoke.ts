import type { Logger } from "pino";
import type { Sql } from "postgres";
import type { CommitGroups } from "./db/commit-groups";
import {
  createInvocationTransaction,
  type FinalStatement,
  type InvocationTransaction,
} from "./db/invocation-transaction";
import { outboxStatement } from "./db/outbox";
import { shouldPrepare } from "./db/prepared-statements";
import type { FunctionContext, ResolvedFunction } from "./define-function";
import { formatDuration } from "./duration";
import { JetfnError, type JetfnErrorCode, toJetfnError } from "./errors";
import type { InvocationKind, RuntimeEmitter } from "./events";
import { isValidFunctionName } from "./function-name";
import { invocationLogger } from "./logger";
import { eventMessage, jobMessage, type OutboxMessage } from "./outbox-message";
import { parseInput, parseOutput } from "./validation";

/** What one invocation needs to know. */
export interface InvocationRequest {
  fn: ResolvedFunction;
  invocationId: string;
  attempt: number;
  kind: InvocationKind;
  /** Decoded JSON body, not yet validated. */
  input: unknown;
  /** Fired when the runtime shuts down: aborts the handler like a timeout. */
  shutdownSignal: AbortSignal;
  /** For jobs: the statement committed together with the handler's writes. */
  finalStatement?: (result: unknown) => FinalStatement;
  onProgress?: (done: number, total: number | undefined) => void;
  /** Called when only a shared COMMIT is left to wait for (the handler and its writes are done). */
  whileCommitting?: () => void;
}

/** How an invocation ended; `log` is its child logger, for the caller's one closing line. */
export type InvocationOutcome =
  | {
      ok: true;
      result: unknown;
      durationMs: number;
      /** True when the final statement was committed with the handler's transaction. */
      committed: boolean;
      /** Jobs and events the handler asked for, committed in the outbox: publish them now. */
      outbox: OutboxMessage[];
      log: Logger;
    }
  | { ok: false; error: JetfnError; durationMs: number; log: Logger };

/** What invoke() uses from the runtime. */
export interface InvokeDependencies {
  sql: Sql;
  logger: Logger;
  events: RuntimeEmitter;
  /** The NATS server's max payload, to refuse oversized jobs and events when they are asked for. */
  maxPayload?: number;
  /** Share transactions and COMMITs with other invocations (each in its own savepoint). */
  commitGroups?: CommitGroups;
}

/**
 * Runs one invocation: validates input, runs the handler in its own lazy transaction with a
 * timeout, validates output, commits (with the job's final record) or rolls back.
 */
export async function invoke(deps: InvokeDependencies, request: InvocationRequest): Promise<InvocationOutcome> {
  const { fn, invocationId, attempt, kind } = request;
  const started = performance.now();
  const log = invocationLogger(deps.logger, fn.name, invocationId, attempt);
  const event = { fn: fn.name, invocationId, attempt, kind };
  deps.events.emit("invocation:start", event);
  // Made when the handler first reaches for ctx.db: most handlers that never do pay nothing for it.
  let transaction: InvocationTransaction | undefined;
  let ended = false;
  const openTransaction = (): InvocationTransaction => {
    if (!transaction) {
      transaction = createInvocationTransaction(
        deps.sql,
        { functionName: fn.name, invocationId, attempt, statementTimeoutMs: fn.timeoutMs },
        deps.commitGroups,
      );
      // A handler that outlived its invocation gets a closed transaction, as if it had one all along.
      if (ended) void transaction.rollback();
    }
    return transaction;
  };
  const outbox: OutboxMessage[] = [];
  const deadline = new InvocationDeadline(fn, request.shutdownSignal);
  try {
    const input = parseInput(fn.definition.spec.input, request.input, fn.name);
    const ctx = createContext(request, () => openTransaction().db, log, deadline, outbox, deps);
    const returned = await deadline.race(() => fn.definition.spec.handler(input, ctx), log);
    const result = parseOutput(fn.definition.spec.output, returned ?? null, fn.name) ?? null;
    const committed = await commitWithOutbox(deps, transaction, request, result, outbox);
    const durationMs = performance.now() - started;
    deps.events.emit("invocation:success", { ...event, durationMs });
    return { ok: true, result, durationMs, committed, outbox, log };
  } catch (thrown) {
    ended = true;
    await transaction?.rollback();
    const error = toJetfnError(thrown);
    return { ok: false, error, durationMs: performance.now() - started, log };
  } finally {
    ended = true;
    deadline.stop();
  }
}

/**
 * Commits the handler's transaction with the outbox rows and the final statement (the job's record).
 * A handler that never touched the database still gets its outbox rows written atomically with its
 * record, in one statement. Returns whether the final statement was committed here.
 */
async function commitWithOutbox(
  deps: InvokeDependencies,
  transaction: InvocationTransaction | undefined,
  request: InvocationRequest,
  result: unknown,
  outbox: OutboxMessage[],
): Promise<boolean> {
  const origin = { functionName: request.fn.name, invocationId: request.invocationId };
  if (!transaction?.begun && outbox.length === 0) {
    await transaction?.commit();
    return false;
  }
  const final = request.finalStatement?.(result);
  const statement = outbox.length > 0 ? outboxStatement(outbox, origin, final) : final;
  if (transaction?.begun) {
    await transaction.commit(statement, request.whileCommitting);
    return true;
  }
  await transaction?.commit();
  const single = statement as FinalStatement;
  await deps.sql.unsafe(single.text, single.params as never[], { prepare: shouldPrepare(deps.sql, single.text) });
  return true;
}

/**
 * Ends an invocation at its timeout or at shutdown, with an error saying which. The handler's
 * AbortSignal is only made if the handler asks for `ctx.signal` (most never do).
 */
class InvocationDeadline {
  readonly #shutdown: AbortSignal;
  readonly #timer: NodeJS.Timeout;
  readonly #onShutdown: () => void;
  #controller: AbortController | undefined;
  #reason: JetfnError | undefined;
  #reject: ((reason: JetfnError) => void) | undefined;

  constructor(fn: ResolvedFunction, shutdown: AbortSignal) {
    this.#shutdown = shutdown;
    this.#timer = setTimeout(
      () =>
        this.#abort(
          new JetfnError(
            "E_HANDLER_TIMEOUT",
            `${fn.name} did not finish within its timeout of ${formatDuration(fn.timeoutMs)}`,
          ),
        ),
      fn.timeoutMs,
    );
    this.#onShutdown = () =>
      this.#abort(new JetfnError("E_SHUTTING_DOWN", `${fn.name} was aborted because the runtime is shutting down`));
    if (shutdown.aborted) this.#onShutdown();
    else shutdown.addEventListener("abort", this.#onShutdown, { once: true });
  }

  /** Fired at the timeout or at shutdown. */
  get signal(): AbortSignal {
    if (!this.#controller) {
      this.#controller = new AbortController();
      if (this.#reason) this.#controller.abort(this.#reason);
    }
    return this.#controller.signal;
  }

  /** Resolves with the handler's result, or rejects as soon as the deadline passes. */
  async race(run: () => Promise<unknown>, log: Logger): Promise<unknown> {
    const handler = Promise.resolve().then(run);
    if (this.#reason) throw this.#reason;
    const aborted = new Promise<never>((_, reject) => {
      this.#reject = reject;
    });
    try {
      return await Promise.race([handler, aborted]);
    } finally {
      this.#reject = undefined;
      // A handler that outlives its timeout may still fail later; that is expected, not unhandled.
      handler.catch((error: unknown) => {
        if (this.#reason) log.debug({ err: error }, "Handler settled after it was aborted.");
      });
    }
  }

  stop(): void {
    clearTimeout(this.#timer);
    this.#shutdown.removeEventListener("abort", this.#onShutdown);
  }

  #abort(reason: JetfnError): void {
    if (this.#reason) return;
    this.#reason = reason;
    this.#controller?.abort(reason);
    this.#reject?.(reason);
  }
}

function createContext(
  request: InvocationRequest,
  database: () => FunctionContext["db"],
  log: Logger,
  deadline: InvocationDeadline,
  outbox: OutboxMessage[],
  deps: InvokeDependencies,
): FunctionContext {
  const { fn, invocationId, attempt, kind } = request;
  const { events, maxPayload } = deps;
  const enqueue: FunctionContext["enqueue"] = async (functionName, input, options) => {
    if (!isValidFunctionName(functionName)) {
      throw new JetfnError("E_FUNCTION_NOT_FOUND", `cannot enqueue "${functionName}": not a valid function name`);
    }
    const message = jobMessage(functionName, input, options?.id, maxPayload);
    outbox.push(message);
    return { id: message.id };
  };
  return {
    get db() {
      return database();
    },
    log,
    invocationId,
    attempt,
    functionName: fn.name,
    get signal() {
      return deadline.signal;
    },
    progress(done, total) {
      if (!Number.isFinite(done) || (total !== undefined && !Number.isFinite(total))) return;
      request.onProgress?.(done, total);
      events.emit("invocation:progress", { fn: fn.name, invocationId, attempt, kind, done, total });
    },
    enqueue,
    call: enqueue,
    async emit(event, data) {
      const message = eventMessage(event, data, undefined, maxPayload);
      outbox.push(message);
      return { id: message.id };
    },
  };
}

/** Error codes that no retry can fix. */
export const NON_RETRYABLE_CODES: ReadonlySet<JetfnErrorCode> = new Set([
  "E_INPUT_INVALID",
  "E_OUTPUT_INVALID",
  "E_NON_RETRYABLE",
  "E_FUNCTION_NOT_FOUND",
  "E_PAYLOAD_TOO_LARGE",
]);
