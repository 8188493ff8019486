import type { Logger } from "pino";
import { compiledSourceOf } from "../deploy/loader";
import type { FunctionContext, FunctionDefinition, ResolvedFunction } from "../sdk/define-function";
import { JetfnError } from "../support/errors";
import { DEFAULT_LOG_LIMITS, type LogLimits } from "../support/log-budget";
import { createHandlerPool, DEFAULT_ABORT_GRACE_MS, type HandlerPool } from "./handler-pool";
import type { ThreadData } from "./thread-messages";

/** The worker-thread pools of a runtime's isolated functions. */
export interface Isolation {
  /**
   * The function as invocations should see it: unchanged for `isolation: "none"`; for `"thread"`, a
   * copy whose handler runs in the version's own pool of worker threads (one thread is started now).
   * invoke() keeps everything else: input and output checks, the timeout, the transaction, the outbox.
   */
  prepare(fn: ResolvedFunction): ResolvedFunction;
  /** A prepared version is no longer deployed: its threads end once their invocations finish. */
  retire(fn: ResolvedFunction): void;
  /** Threads alive per function (for tests and `ls`). */
  threads(name: string): number;
  /** Terminates every thread. */
  close(): Promise<void>;
}

/** Options of the isolation pools. */
export interface IsolationOptions {
  logger: Logger;
  /** How long an aborted handler may take to settle before its thread is terminated. @default 500 */
  abortGraceMs?: number;
  /** What a handler may log per invocation. @default DEFAULT_LOG_LIMITS */
  logLimits?: LogLimits;
  /** Longest a function file's top-level code may run in a thread. @default no limit */
  loadTimeoutMs?: number;
  /** The app's drizzle schema as the runtime compiled it: threads' `ctx.db` answers relational queries too. @default none */
  schema?: ThreadData["schema"];
}

/** Creates the pools' owner for one runtime. */
export function createIsolation(options: IsolationOptions): Isolation {
  const pools = new Map<ResolvedFunction, HandlerPool>();
  /** Pools of versions no longer deployed, by function name, until their last thread ends. */
  const retiring = new Map<HandlerPool, string>();
  const abortGraceMs = options.abortGraceMs ?? DEFAULT_ABORT_GRACE_MS;
  return {
    prepare(fn) {
      if (fn.isolation !== "thread") return fn;
      const logger = options.logger.child({ fn: fn.name, version: fn.version });
      const source = compiledSourceOf(fn.definition);
      if (source === undefined) {
        throw new JetfnError("E_INTERNAL", `${fn.file}: no compiled code is kept for isolated function ${fn.name}`);
      }
      const pool = createHandlerPool({
        data: {
          file: fn.file,
          functionName: fn.name,
          source,
          logLimits: options.logLimits ?? DEFAULT_LOG_LIMITS,
          loadTimeoutMs: options.loadTimeoutMs,
          schema: options.schema,
        },
        capacity: fn.concurrency,
        abortGraceMs,
        logger,
      });
      pool.warm();
      const prepared = withHandler(fn, (input, ctx) => pool.run(input, ctx));
      pools.set(prepared, pool);
      return prepared;
    },
    retire(fn) {
      const pool = pools.get(fn);
      if (!pool) return;
      pools.delete(fn);
      retiring.set(pool, fn.name);
      void pool.retire().finally(() => retiring.delete(pool));
    },
    threads(name) {
      let count = 0;
      for (const [fn, pool] of pools) if (fn.name === name) count += pool.size;
      for (const [pool, poolName] of retiring) if (poolName === name) count += pool.size;
      return count;
    },
    async close() {
      const all = [...pools.values(), ...retiring.keys()];
      pools.clear();
      await Promise.allSettled(all.map((pool) => pool.close()));
    },
  };
}

/** A copy of `fn` whose handler is `handler` (the definition's other options are unchanged). */
function withHandler(
  fn: ResolvedFunction,
  handler: (input: unknown, ctx: FunctionContext) => Promise<unknown>,
): ResolvedFunction {
  const spec = Object.freeze({ ...fn.definition.spec, handler }) as unknown as FunctionDefinition["spec"];
  return Object.freeze({ ...fn, definition: Object.freeze({ kind: fn.definition.kind, spec }) });
}
