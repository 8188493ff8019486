import type { Msg } from "@nats-io/transport-node";
import type { Logger } from "pino";
import type { RuntimeEmitter } from "../triggers/events";

/**
 * Reply subjects a NATS client may own: its inbox (`_INBOX.`, nats.js's default), and the
 * reply subjects the server maps a cross-account request to (`_R_.`), which route the answer back
 * to the requester's own account.
 */
export const DEFAULT_INBOX_PREFIXES: readonly string[] = Object.freeze(["_INBOX.", "_R_."]);

/** Which runtime API a request came to (the label of `jetfn_refused_replies_total`). */
export type ReplyApi = "call" | "status" | "cancel" | "enqueue" | "dlq" | "discovery";

/** Decides whether the runtime may answer a request to its reply subject. */
export interface ReplyGuard {
  /**
   * True when the request's reply subject is an inbox. The runtime answers with its own NATS
   * permissions, so a reply subject such as `$JS.API.STREAM.PURGE.JETFN_JOBS` or
   * `jetfn.done.<id>` would make it act for whoever sent the request: such a request is dropped.
   */
  accepts(message: Msg, api: ReplyApi): boolean;
}

/** What the guard needs. */
export interface ReplyGuardOptions {
  /** Reply-subject prefixes accepted (each ends with a dot). */
  prefixes: readonly string[];
  events: RuntimeEmitter;
  logger: Logger;
  /** Least time between two warnings; refusals in between are counted into the next one. @default 60_000 */
  warnEveryMs?: number;
}

const DEFAULT_WARN_EVERY_MS = 60_000;

/** Creates the guard every request handler of the runtime checks before it answers. */
export function createReplyGuard(options: ReplyGuardOptions): ReplyGuard {
  const warnEveryMs = options.warnEveryMs ?? DEFAULT_WARN_EVERY_MS;
  let lastWarnedAt = Number.NEGATIVE_INFINITY;
  let unreported = 0;
  return {
    accepts(message, api) {
      const reply = message.reply;
      if (!reply || isInbox(reply, options.prefixes)) return true;
      options.events.emit("reply:refused", { api, subject: message.subject, reply });
      unreported++;
      const now = Date.now();
      if (now - lastWarnedAt >= warnEveryMs) {
        options.logger.warn(
          { api, subject: message.subject.slice(0, 300), reply: reply.slice(0, 300), refused: unreported },
          "Dropped a request whose reply subject is not an inbox; the runtime answers only to inboxes.",
        );
        lastWarnedAt = now;
        unreported = 0;
      }
      return false;
    },
  };
}

/** Prefix of a reply the server rewrote to route it back across a gateway: `_GR_.<cluster>.<server>.<reply>`. */
const GATEWAY_REPLY = /^_GR_\.[^.]+\.[^.]+\./;

function isInbox(reply: string, prefixes: readonly string[]): boolean {
  // A wildcard cannot be published to; a reply holding one is not an inbox either.
  if (reply.includes("*") || reply.includes(">")) return false;
  // In a supercluster the requester's own reply subject follows the gateway's routing prefix.
  const own = reply.replace(GATEWAY_REPLY, "");
  return prefixes.some((prefix) => own.length > prefix.length && own.startsWith(prefix));
}
