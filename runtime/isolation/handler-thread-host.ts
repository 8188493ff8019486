import { Worker } from "node:worker_threads";
import type { Logger } from "pino";
import { handlerThreadEnvironment } from "../config";
import type { FunctionContext } from "../sdk/define-function";
import { JetfnError } from "../support/errors";
import { noteDroppedLines } from "../support/log-budget";
import {
  deserializeError,
  type FromThread,
  type QueryAnswer,
  serializeError,
  type ThreadData,
  type ThreadRequest,
  type ToThread,
} from "./thread-messages";

/** One worker thread of an isolated function, seen from the runtime: runs one invocation at a time. */
export interface HandlerThread {
  /** Resolves once the function file is loaded in the thread; rejects with E_FUNCTION_LOAD_FAILED. */
  readonly ready: Promise<void>;
  /** Node's id of the thread (what `threadId` says inside it). */
  readonly threadId: number;
  /** False once the thread has exited (or is being terminated). */
  readonly alive: boolean;
  /** Runs the handler on `input` with `ctx` relayed; settles with its result or error. */
  run(input: unknown, ctx: FunctionContext): Promise<unknown>;
  terminate(): Promise<void>;
}

/** How a thread is started and what it reports to. */
export interface HandlerThreadOptions {
  script: string;
  data: ThreadData;
  /** Bound to the function: for what a thread says outside any invocation. */
  logger: Logger;
  /** How long an aborted handler may take to settle before its thread is terminated. */
  abortGraceMs: number;
  onExit(thread: HandlerThread): void;
}

/** Starts a worker thread for one function. */
export function startHandlerThread(options: HandlerThreadOptions): HandlerThread {
  return new WorkerThread(options);
}

interface ActiveRun {
  run: number;
  ctx: FunctionContext;
  resolve(value: unknown): void;
  reject(error: unknown): void;
  cleanup(): void;
}

class WorkerThread implements HandlerThread {
  readonly ready: Promise<void>;
  readonly threadId: number;
  readonly #worker: Worker;
  readonly #options: HandlerThreadOptions;
  #alive = true;
  #terminating = false;
  #runs = 0;
  #current: ActiveRun | undefined;
  #crash: Error | undefined;
  #markReady: (() => void) | undefined;
  #failReady: ((error: Error) => void) | undefined;

  constructor(options: HandlerThreadOptions) {
    this.#options = options;
    this.ready = new Promise<void>((resolve, reject) => {
      this.#markReady = resolve;
      this.#failReady = reject;
    });
    // Whoever awaits `ready` sees the failure; it must not also count as an unhandled rejection.
    this.ready.catch(() => undefined);
    // Its own environment, without the runtime's secrets: code in the thread reads only that.
    this.#worker = new Worker(options.script, { workerData: options.data, env: handlerThreadEnvironment() });
    this.threadId = this.#worker.threadId;
    this.#worker.unref();
    this.#worker.on("message", (message: FromThread) => this.#onMessage(message));
    this.#worker.on("error", (error) => {
      this.#crash = error;
    });
    this.#worker.on("exit", (code) => this.#onExit(code));
  }

  get alive(): boolean {
    return this.#alive && !this.#terminating;
  }

  run(input: unknown, ctx: FunctionContext): Promise<unknown> {
    const run = ++this.#runs;
    if (!this.#alive) {
      const name = this.#options.data.functionName;
      return Promise.reject(new JetfnError("E_HANDLER_EXITED", `the worker thread of ${name} has already exited`));
    }
    return new Promise((resolve, reject) => {
      let graceTimer: NodeJS.Timeout | undefined;
      const onAbort = (): void => {
        this.#abort(active);
        graceTimer = setTimeout(() => this.#terminateStuck(active), this.#options.abortGraceMs);
      };
      const active: ActiveRun = {
        run,
        ctx,
        resolve,
        reject,
        cleanup: () => {
          clearTimeout(graceTimer);
          ctx.signal.removeEventListener("abort", onAbort);
        },
      };
      this.#current = active;
      const message: ToThread = {
        type: "run",
        run,
        input,
        invocationId: ctx.invocationId,
        attempt: ctx.attempt,
        logLevel: ctx.log.level,
      };
      try {
        this.#worker.postMessage(message);
        if (ctx.signal.aborted) onAbort();
        else ctx.signal.addEventListener("abort", onAbort, { once: true });
      } catch (error) {
        const name = this.#options.data.functionName;
        this.#settle(active, () =>
          reject(
            new JetfnError(
              "E_INPUT_INVALID",
              `the parsed input of ${name} cannot be passed to its worker thread: ${(error as Error).message}`,
              { cause: error },
            ),
          ),
        );
      }
    });
  }

  async terminate(): Promise<void> {
    this.#terminating = true;
    await this.#worker.terminate();
  }

  #abort(active: ActiveRun): void {
    if (this.#current !== active) return;
    this.#send({ type: "abort", run: active.run, reason: serializeError(active.ctx.signal.reason) });
  }

  /** The handler ignored the abort (or spins): end the thread; a fresh one takes the next invocation. */
  #terminateStuck(active: ActiveRun): void {
    if (this.#current !== active) return;
    this.#options.logger.warn(
      { invocationId: active.ctx.invocationId, graceMs: this.#options.abortGraceMs },
      "An aborted handler did not stop; its worker thread is terminated.",
    );
    this.#terminateQuietly();
  }

  #terminateQuietly(): void {
    this.terminate().catch((error: unknown) =>
      this.#options.logger.error({ err: error }, "Terminating a worker thread failed."),
    );
  }

  #settle(active: ActiveRun, outcome: () => void): void {
    if (this.#current !== active) return;
    this.#current = undefined;
    active.cleanup();
    outcome();
  }

  #onMessage(message: FromThread): void {
    const active = this.#current && "run" in message && message.run === this.#current.run ? this.#current : undefined;
    switch (message.type) {
      case "ready":
        this.#markReady?.();
        return;
      case "load-failed":
        this.#failReady?.(loadFailure(this.#options.data.file, message.error));
        this.#terminateQuietly();
        return;
      case "request":
        this.#answer(active?.ctx, message.call, message.request);
        return;
      case "progress":
        active?.ctx.progress(message.done, message.total);
        return;
      case "log":
        // Counted again against the invocation's budget here: the thread's own count runs where
        // handler code can change it; this one it cannot reach.
        writeRelayedLine(active?.ctx.log ?? this.#options.logger, message.line);
        return;
      case "log-dropped":
        noteDroppedLines(active?.ctx.log, message.count);
        return;
      case "unhandled-rejection":
        this.#options.logger.error(
          { err: deserializeError(message.error) },
          "A promise was rejected in a worker thread and nobody handled it (a handler left a promise floating); the thread keeps running.",
        );
        return;
      case "done":
        if (!active) return;
        if (message.ok) this.#settle(active, () => active.resolve(message.value));
        else this.#settle(active, () => active.reject(deserializeError(message.error)));
    }
  }

  #answer(ctx: FunctionContext | undefined, call: number, request: ThreadRequest): void {
    const answering = ctx
      ? performRequest(ctx, request)
      : Promise.reject(
          new JetfnError(
            "E_HANDLER_TIMEOUT",
            "the invocation already ended; its transaction no longer accepts queries",
          ),
        );
    answering.then(
      (value) => this.#send({ type: "reply", call, ok: true, value }),
      (error: unknown) => this.#send({ type: "reply", call, ok: false, error: serializeError(error) }),
    );
  }

  #send(message: ToThread): void {
    if (!this.#alive) return;
    try {
      this.#worker.postMessage(message);
    } catch (error) {
      if (message.type !== "reply") throw error;
      this.#send({ type: "reply", call: message.call, ok: false, error: serializeError(error) });
    }
  }

  #onExit(code: number): void {
    this.#alive = false;
    const name = this.#options.data.functionName;
    this.#failReady?.(
      this.#crash
        ? loadFailure(this.#options.data.file, serializeError(this.#crash))
        : new JetfnError(
            "E_FUNCTION_LOAD_FAILED",
            `the worker thread of ${name} exited with code ${code} while starting`,
          ),
    );
    const active = this.#current;
    if (active) {
      const error = this.#terminating
        ? (active.ctx.signal.reason ??
          new JetfnError("E_SHUTTING_DOWN", `the worker thread of ${name} was terminated by the runtime`))
        : exitError(name, code, this.#crash);
      this.#settle(active, () => active.reject(error));
    } else if (!this.#terminating) {
      this.#options.logger.warn({ exitCode: code, err: this.#crash }, "An idle worker thread exited.");
    }
    this.#options.logger.debug({ threadId: this.threadId, exitCode: code }, "Worker thread ended.");
    this.#options.onExit(this);
  }
}

/** Runs what a handler in a thread asked for, with the invocation's own context. */
async function performRequest(ctx: FunctionContext, request: ThreadRequest): Promise<unknown> {
  switch (request.op) {
    case "query": {
      // The client under ctx.db is the invocation's transaction: the query runs inside it.
      const client = (ctx.db as unknown as { $client: TransactionClient }).$client;
      const query = client.unsafe(request.text, request.params, { prepare: request.prepare });
      const rows = (await (request.mode === "values" ? query.values() : query)) as QueryRows;
      const answer: QueryAnswer = { rows: [...rows], count: rows.count ?? null, command: rows.command ?? null };
      return answer;
    }
    case "enqueue":
      return ctx.enqueue(request.functionName, request.input, request.options);
    case "call":
      return ctx.call(request.functionName, request.input, request.options);
    case "emit":
      return ctx.emit(request.event, request.data);
  }
}

interface TransactionClient {
  unsafe(
    text: string,
    params: unknown[],
    options: { prepare?: boolean },
  ): PromiseLike<unknown> & {
    values(): PromiseLike<unknown>;
  };
}

type QueryRows = unknown[] & { count?: number | null; command?: string | null };

/** Writes a line logged in a thread through `log`, so it carries the invocation's bindings. */
function writeRelayedLine(log: Logger, line: string): void {
  let entry: Record<string, unknown>;
  try {
    entry = JSON.parse(line) as Record<string, unknown>;
  } catch {
    log.info({ line }, "A worker thread logged a line that is not JSON.");
    return;
  }
  const { level, msg, ...fields } = entry;
  const label = log.levels.labels[level as number] ?? "info";
  (log as unknown as Record<string, (fields: unknown, msg?: unknown) => void>)[label]?.(fields, msg);
}

function exitError(name: string, code: number, crash: Error | undefined): JetfnError {
  if (crash) {
    return new JetfnError(
      "E_HANDLER_EXITED",
      `the worker thread of ${name} ended with an uncaught exception before the handler settled: ${crash.message}`,
      { cause: crash },
    );
  }
  return new JetfnError(
    "E_HANDLER_EXITED",
    `the worker thread of ${name} exited with code ${code} before the handler settled (process.exit in the handler?)`,
  );
}

function loadFailure(file: string, error: ReturnType<typeof serializeError>): JetfnError {
  return new JetfnError(
    "E_FUNCTION_LOAD_FAILED",
    `${file} could not be loaded in a worker thread: ${error.name}: ${error.message}`,
    { cause: deserializeError(error) },
  );
}
