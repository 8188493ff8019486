// Entry point of an isolated function's worker thread: bundled by thread-script.ts, started by
// handler-pool.ts. Loads one build of one function file and runs its handler, one invocation at a
// time; everything that touches the runtime's state is relayed to the main thread.
import { parentPort, workerData } from "node:worker_threads";
import pino, { type Logger } from "pino";
import type { Sql } from "postgres";
import { createDatabaseBinder } from "../db/app-database";
import { evaluateFunctionCode } from "../deploy/evaluate-function";
import type { FunctionContext, FunctionDefinition, InvocationDatabase } from "../sdk/define-function";
import { isFunctionDefinition } from "../sdk/define-function";
import type { JetfnErrorCode } from "../support/error-codes";
import { JetfnError } from "../support/errors";
import { budgetedLogger, LogBudget } from "../support/log-budget";
import { createRelayedClient } from "./relayed-client";
import {
  deserializeError,
  type FromThread,
  serializeError,
  type ThreadData,
  type ThreadRequest,
  type ToThread,
} from "./thread-messages";

process.setSourceMapsEnabled(true);
const port = parentPort as NonNullable<typeof parentPort>;
const data = workerData as ThreadData;
const pending = new Map<number, { resolve(value: unknown): void; reject(error: unknown): void }>();
const aborts = new Map<number, AbortController>();
let nextCall = 1;
/** `ctx.db` with the app's schema: evaluated once per thread from the runtime's build of it. */
const bindDatabase = createDatabaseBinder(
  data.schema ? (evaluateFunctionCode(data.schema.file, data.schema.source) as Record<string, unknown>) : undefined,
);
let currentRun = 0;

function post(message: FromThread): void {
  port.postMessage(message);
}

/** Pino whose lines go to the runtime, which writes them through the invocation's own logger. */
const log: Logger = pino(
  { base: undefined, timestamp: false },
  { write: (line: string) => post({ type: "log", run: currentRun, line }) },
);

function relay(run: number, request: ThreadRequest): Promise<unknown> {
  const call = nextCall++;
  return new Promise((resolve, reject) => {
    pending.set(call, { resolve, reject });
    post({ type: "request", run, call, request });
  });
}

function createContext(message: Extract<ToThread, { type: "run" }>, budget: LogBudget): FunctionContext {
  const { run } = message;
  const controller = new AbortController();
  aborts.set(run, controller);
  let db: InvocationDatabase | undefined;
  const jobRequest =
    (op: "enqueue" | "call") =>
    (functionName: string, input: unknown, options?: { id?: string }): Promise<{ id: string }> =>
      relay(run, { op, functionName, input, options }) as Promise<{ id: string }>;
  return {
    get db() {
      db ??= bindDatabase(createRelayedClient((request) => relay(run, request)) as Sql);
      return db;
    },
    // Bounded here, so that a flood of lines never crosses to the runtime's thread.
    log: budgetedLogger(log, budget),
    invocationId: message.invocationId,
    attempt: message.attempt,
    functionName: data.functionName,
    signal: controller.signal,
    progress(done, total) {
      post({ type: "progress", run, done, total });
    },
    enqueue: jobRequest("enqueue"),
    call: jobRequest("call"),
    // Steps need their own transactions in the runtime's process: not across the thread yet.
    step: noSteps,
    sleep: noSteps,
    sleepUntil: noSteps,
    waitForEvent: noSteps,
    emit(event, eventData) {
      // The runtime checks the data against the event's schema: it loaded the same file.
      const name = typeof event === "string" ? event : event.name;
      return relay(run, { op: "emit", event: name, data: eventData }) as Promise<{ id: string }>;
    },
  };
}

async function runHandler(definition: FunctionDefinition, message: Extract<ToThread, { type: "run" }>): Promise<void> {
  currentRun = message.run;
  log.level = message.logLevel;
  const budget = new LogBudget(data.logLimits);
  const ctx = createContext(message, budget);
  let done: FromThread;
  try {
    const value = await definition.spec.handler(message.input as never, ctx);
    done = { type: "done", run: message.run, ok: true, value: value ?? null };
  } catch (error) {
    done = { type: "done", run: message.run, ok: false, error: serializeError(error) };
  } finally {
    aborts.delete(message.run);
  }
  // Before "done": the runtime reports the count when the invocation ends.
  if (budget.dropped > 0) post({ type: "log-dropped", run: message.run, count: budget.dropped });
  try {
    post(done);
  } catch (error) {
    const failure = new JetfnError(
      "E_OUTPUT_INVALID",
      `the result of ${data.functionName} cannot be passed back from its worker thread: ${(error as Error).message}`,
    );
    post({ type: "done", run: message.run, ok: false, error: serializeError(failure) });
  }
}

function onMessage(definition: FunctionDefinition, message: ToThread): void {
  if (message.type === "run") {
    void runHandler(definition, message);
  } else if (message.type === "abort") {
    const reason = deserializeError(message.reason);
    const code = (reason as { code?: unknown }).code as JetfnErrorCode;
    aborts.get(message.run)?.abort(new JetfnError(code ?? "E_HANDLER_TIMEOUT", reason.message));
  } else {
    const waiter = pending.get(message.call);
    pending.delete(message.call);
    if (message.ok) waiter?.resolve(message.value);
    else waiter?.reject(deserializeError(message.error));
  }
}

function load(): FunctionDefinition {
  const exported = evaluateFunctionCode(data.file, data.source, data.loadTimeoutMs) as
    | { default?: unknown }
    | undefined;
  const definition = exported?.default;
  if (!isFunctionDefinition(definition)) {
    throw new JetfnError("E_FUNCTION_LOAD_FAILED", `${data.file} has no defineFunction(...) default export`);
  }
  return definition;
}

// Node would end the thread (not the runtime) on an unhandled rejection; report it and keep serving.
process.on("unhandledRejection", (reason) => post({ type: "unhandled-rejection", error: serializeError(reason) }));
try {
  const definition = load();
  port.on("message", (message: ToThread) => onMessage(definition, message));
  post({ type: "ready" });
} catch (error) {
  post({ type: "load-failed", error: serializeError(error) });
}

function noSteps(): Promise<never> {
  return Promise.reject(
    new JetfnError("E_STEP_INVALID", 'durable steps do not work in functions with isolation: "thread" yet'),
  );
}
