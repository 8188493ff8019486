import type { Logger } from "pino";
import type { FunctionContext } from "../sdk/define-function";
import { JetfnError } from "../support/errors";
import { type HandlerThread, startHandlerThread } from "./handler-thread-host";
import type { ThreadData } from "./thread-messages";
import { handlerThreadScript } from "./thread-script";

/** The worker threads of one deployed version of an isolated function. */
export interface HandlerPool {
  /** Runs one invocation in an idle thread, or in a new one. */
  run(input: unknown, ctx: FunctionContext): Promise<unknown>;
  /** Starts one thread ahead of the first invocation (a load failure is logged). */
  warm(): void;
  /** Threads alive right now. */
  readonly size: number;
  /** No longer deployed: idle threads end now, busy ones as soon as their invocation ends. */
  retire(): Promise<void>;
  /** Terminates every thread now (shutdown, after in-flight work has had its grace). */
  close(): Promise<void>;
}

/** What a pool needs to know. */
export interface HandlerPoolOptions {
  data: ThreadData;
  /** Threads kept between invocations: the function's concurrency. */
  capacity: number;
  abortGraceMs: number;
  logger: Logger;
}

/** How long an aborted handler may take to settle before its thread is terminated. */
export const DEFAULT_ABORT_GRACE_MS = 500;

/** Creates a pool; threads start on demand (or with warm()). */
export function createHandlerPool(options: HandlerPoolOptions): HandlerPool {
  return new ThreadPool(options);
}

class ThreadPool implements HandlerPool {
  readonly #options: HandlerPoolOptions;
  readonly #threads = new Set<HandlerThread>();
  #idle: HandlerThread[] = [];
  #retired = false;
  #emptied: (() => void) | undefined;

  constructor(options: HandlerPoolOptions) {
    this.#options = options;
  }

  get size(): number {
    return this.#threads.size;
  }

  async run(input: unknown, ctx: FunctionContext): Promise<unknown> {
    const thread = await this.#acquire();
    try {
      return await thread.run(input, ctx);
    } finally {
      this.#release(thread);
    }
  }

  warm(): void {
    if (this.#threads.size > 0) return;
    this.#spawn().then(
      (thread) => this.#release(thread),
      (error: unknown) => this.#options.logger.error({ err: error }, "Could not start a worker thread."),
    );
  }

  retire(): Promise<void> {
    this.#retired = true;
    for (const thread of this.#idle) this.#end(thread);
    this.#idle = [];
    if (this.#threads.size === 0) return Promise.resolve();
    return new Promise((resolve) => {
      this.#emptied = resolve;
    });
  }

  async close(): Promise<void> {
    const emptied = this.retire();
    await Promise.allSettled([...this.#threads].map((thread) => thread.terminate()));
    await emptied;
  }

  async #acquire(): Promise<HandlerThread> {
    for (let thread = this.#idle.pop(); thread; thread = this.#idle.pop()) if (thread.alive) return thread;
    return this.#spawn();
  }

  async #spawn(): Promise<HandlerThread> {
    const { data, logger } = this.#options;
    let script: string;
    try {
      script = await handlerThreadScript();
    } catch (error) {
      throw new JetfnError("E_INTERNAL", `could not build the worker thread script: ${(error as Error).message}`, {
        cause: error,
      });
    }
    const started = performance.now();
    const thread = startHandlerThread({
      script,
      data,
      logger,
      abortGraceMs: this.#options.abortGraceMs,
      onExit: (exited) => this.#forget(exited),
    });
    this.#threads.add(thread);
    await thread.ready;
    logger.debug(
      { threadId: thread.threadId, startMs: Math.round(performance.now() - started), threads: this.#threads.size },
      "Worker thread started.",
    );
    return thread;
  }

  /** Back to idle, unless it died, the pool is retired, or enough threads are idle already. */
  #release(thread: HandlerThread): void {
    if (!thread.alive) return;
    if (this.#retired || this.#threads.size > this.#options.capacity) {
      this.#end(thread);
      return;
    }
    this.#idle.push(thread);
  }

  #end(thread: HandlerThread): void {
    thread.terminate().catch((error: unknown) => {
      this.#options.logger.error({ err: error }, "Terminating a worker thread failed.");
    });
  }

  #forget(thread: HandlerThread): void {
    this.#threads.delete(thread);
    this.#idle = this.#idle.filter((idle) => idle !== thread);
    if (this.#threads.size === 0) this.#emptied?.();
  }
}
