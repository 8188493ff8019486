import { randomUUID } from "node:crypto";
import type { Msg, NatsConnection, Subscription } from "@nats-io/transport-node";
import type { Logger } from "pino";
import { describeInvalidName, isValidFunctionName } from "../deploy/function-name";
import { type InvokeDependencies, invoke } from "../invocation/invoke";
import type { Limiter } from "../invocation/limiter";
import { parseInputBody } from "../invocation/validation";
import type { OutboxMessage } from "../outbox/outbox-message";
import type { ResolvedFunction } from "../sdk/define-function";
import { JetfnError } from "../support/errors";
import { failureFields } from "../support/logger";
import type { RuntimeEmitter } from "../triggers/events";
import { headerValue } from "./header-value";
import { replyError, replyJson, statusFor } from "./reply";
import type { ReplyGuard } from "./reply-guard";
import { CALL_PREFIX, ID_HEADER, isValidInvocationId } from "./subjects";

/** What the call server needs from the runtime. */
export interface CallServerOptions {
  nc: NatsConnection;
  queueGroup: string;
  lookup: (name: string) => { fn: ResolvedFunction; limiter: Limiter } | undefined;
  invokeDependencies: InvokeDependencies;
  events: RuntimeEmitter;
  logger: Logger;
  /** Drops calls whose reply subject is not an inbox. */
  replyGuard: ReplyGuard;
  /** Fired when in-flight calls must be aborted (shutdown grace is over). */
  abortSignal: AbortSignal;
  /** Publishes the jobs and events a call committed to the outbox. */
  publishPendingJobs: (messages: OutboxMessage[], log: Logger) => Promise<void>;
}

/** Answers `fn.call.<name>` requests for every deployed function. */
export interface CallServer {
  readonly inFlight: number;
  /** Stops taking calls; resolves when the ones in flight have replied. */
  close(): Promise<void>;
}

/** Subscribes to `fn.call.>` in the runtimes' queue group, so N runtimes share the calls. */
export function startCallServer(options: CallServerOptions): CallServer {
  const inFlight = new Set<Promise<void>>();
  const subscription: Subscription = options.nc.subscribe(`${CALL_PREFIX}>`, {
    queue: options.queueGroup,
    callback: (error, message) => {
      if (error) {
        options.logger.error({ err: error }, "The call subscription failed.");
        return;
      }
      const handling = handleCall(options, message).catch((failure: unknown) => {
        options.logger.error({ err: failure, subject: message.subject }, "A call could not be answered.");
      });
      inFlight.add(handling);
      void handling.finally(() => inFlight.delete(handling));
    },
  });
  return {
    get inFlight() {
      return inFlight.size;
    },
    async close() {
      await subscription.drain();
      while (inFlight.size > 0) await Promise.allSettled([...inFlight]);
    },
  };
}

async function handleCall(options: CallServerOptions, message: Msg): Promise<void> {
  const name = message.subject.slice(CALL_PREFIX.length);
  const maxPayload = options.nc.info?.max_payload ?? 1_048_576;
  if (!message.reply) {
    options.logger.warn(
      { subject: message.subject },
      "Ignored a call without a reply subject; publish to fn.job.<name> for fire-and-forget.",
    );
    return;
  }
  if (!options.replyGuard.accepts(message, "call")) return;
  const target = options.lookup(name);
  if (!target) {
    const reason = isValidFunctionName(name) ? `no function named "${name}" is deployed` : describeInvalidName(name);
    replyError(message, 404, { code: "E_FUNCTION_NOT_FOUND", message: reason });
    return;
  }
  const givenId = headerValue(message.headers, ID_HEADER);
  const invocationId = givenId && isValidInvocationId(givenId) ? givenId : randomUUID();
  let input: unknown;
  try {
    input = parseInputBody(message.data, name);
  } catch (error) {
    const failure = error as JetfnError;
    replyError(message, statusFor(failure), failure, invocationId);
    return;
  }
  let release: () => void;
  try {
    release = await target.limiter.acquire(options.abortSignal);
  } catch {
    const error = new JetfnError("E_SHUTTING_DOWN", `the runtime is shutting down; call ${name} again`);
    replyError(message, statusFor(error), error, invocationId);
    return;
  }
  try {
    const outcome = await invoke(options.invokeDependencies, {
      fn: target.fn,
      invocationId,
      attempt: 1,
      kind: "call",
      input,
      shutdownSignal: options.abortSignal,
    });
    const durationMs = Math.round(outcome.durationMs * 100) / 100;
    if (outcome.ok) {
      try {
        replyJson(message, outcome.result, maxPayload, invocationId);
      } catch (error) {
        // JSON.stringify throws on values nested too deeply for the stack (echoed hostile input).
        const failure = new JetfnError(
          "E_OUTPUT_INVALID",
          `the result of ${name} cannot be encoded as JSON: ${(error as Error).message}`,
        );
        replyError(message, statusFor(failure), failure, invocationId);
        return;
      }
      outcome.log.info({ outcome: "succeeded", kind: "call", durationMs }, "Call succeeded.");
      await options.publishPendingJobs(outcome.outbox, outcome.log);
      return;
    }
    const { error } = outcome;
    options.events.emit("invocation:failure", {
      fn: name,
      invocationId,
      attempt: 1,
      kind: "call",
      durationMs: outcome.durationMs,
      error,
      final: true,
    });
    replyError(message, statusFor(error), error, invocationId);
    outcome.log.warn(
      { outcome: "failed", kind: "call", durationMs, ...failureFields(error) },
      `Call failed: ${error.message}`,
    );
  } finally {
    release();
  }
}
