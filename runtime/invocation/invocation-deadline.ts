import type { Logger } from "pino";
import type { ResolvedFunction } from "../sdk/define-function";
import { formatDuration } from "../support/duration";
import { JetfnError } from "../support/errors";

/**
 * Ends an invocation at its timeout or at shutdown, with an error saying which. The handler's
 * AbortSignal is only made if the handler asks for `ctx.signal` (most never do).
 */
export class InvocationDeadline {
  readonly #fn: ResolvedFunction;
  readonly #shutdown: ShutdownWatch;
  readonly #timer: NodeJS.Timeout;
  #controller: AbortController | undefined;
  #reason: JetfnError | undefined;
  #reject: ((reason: JetfnError) => void) | undefined;
  #logs: { readonly log: Logger } | undefined;

  constructor(fn: ResolvedFunction, shutdown: AbortSignal) {
    this.#fn = fn;
    this.#timer = setTimeout(() => this.#timedOut(), fn.timeoutMs);
    this.#shutdown = shutdownWatch(shutdown);
    if (shutdown.aborted) this.abortForShutdown();
    else this.#shutdown.running.add(this);
  }

  /** Fired at the timeout or at shutdown. */
  get signal(): AbortSignal {
    if (!this.#controller) {
      this.#controller = new AbortController();
      if (this.#reason) this.#controller.abort(this.#reason);
    }
    return this.#controller.signal;
  }

  /**
   * Runs `handler(input, ctx)`: resolves with its result, or rejects as soon as the deadline
   * passes. `logs.log` is read only if a handler that was cut off fails later.
   */
  race<I, C>(
    handler: (input: I, ctx: C) => unknown,
    input: I,
    ctx: C,
    logs: { readonly log: Logger },
  ): Promise<unknown> {
    if (this.#reason) return Promise.reject(this.#reason);
    let returned: unknown;
    try {
      returned = handler(input, ctx);
    } catch (error) {
      return Promise.reject(error);
    }
    if (!isThenable(returned)) return Promise.resolve(returned);
    this.#logs = logs;
    return new Promise((resolve, reject) => {
      this.#reject = reject;
      returned.then(resolve, (error: unknown) => {
        // A handler that outlives its deadline may still fail later; that is expected, not unhandled.
        if (this.#reason) this.#logs?.log.debug({ err: error }, "Handler settled after it was aborted.");
        reject(error);
      });
    });
  }

  stop(): void {
    clearTimeout(this.#timer);
    this.#shutdown.running.delete(this);
    this.#reject = undefined;
  }

  /** Aborts the invocation because its job was cancelled (E_CANCELLED). */
  cancel(reason: JetfnError): void {
    this.#abort(reason);
  }

  /** Ends the run at a durable sleep, or as a stale copy (E_SUSPENDED): not a failure. */
  suspend(reason: JetfnError): void {
    this.#abort(reason);
  }

  /** Aborts the invocation because the runtime is shutting down. */
  abortForShutdown(): void {
    this.#abort(new JetfnError("E_SHUTTING_DOWN", `${this.#fn.name} was aborted because the runtime is shutting down`));
  }

  #timedOut(): void {
    this.#abort(
      new JetfnError(
        "E_HANDLER_TIMEOUT",
        `${this.#fn.name} did not finish within its timeout of ${formatDuration(this.#fn.timeoutMs)}`,
      ),
    );
  }

  #abort(reason: JetfnError): void {
    if (this.#reason) return;
    this.#reason = reason;
    this.#controller?.abort(reason);
    this.#reject?.(reason);
  }
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return typeof (value as { then?: unknown } | null)?.then === "function";
}

/** The invocations running under one shutdown signal, aborted together when it fires. */
interface ShutdownWatch {
  running: Set<InvocationDeadline>;
}

// One listener per shutdown signal instead of one per invocation: an AbortSignal's listeners are
// costly to add and remove at thousands of invocations a second.
const watches = new WeakMap<AbortSignal, ShutdownWatch>();

function shutdownWatch(signal: AbortSignal): ShutdownWatch {
  let watch = watches.get(signal);
  if (!watch) {
    const created: ShutdownWatch = { running: new Set() };
    signal.addEventListener(
      "abort",
      () => {
        for (const deadline of [...created.running]) deadline.abortForShutdown();
      },
      { once: true },
    );
    watches.set(signal, created);
    watch = created;
  }
  return watch;
}
