import { createInbox, type Msg, type MsgHdrs, type NatsConnection, type Subscription } from "@nats-io/transport-node";

/** Options of one request. */
export interface MuxRequestOptions {
  timeoutMs: number;
  headers?: MsgHdrs;
}

/**
 * Request-reply over one reply subscription per connection, like nats.js's own `request()`, minus
 * its two Error objects (with stack traces) made for every request whether it fails or not: at
 * high call rates they were a quarter of the caller's CPU. Errors are named like nats.js's
 * (`TimeoutError`, `NoRespondersError`) so callers can tell them apart the same way.
 */
export class CallMux {
  readonly #nc: NatsConnection;
  readonly #prefix: string;
  readonly #pending = new Map<string, PendingRequest>();
  #subscription: Subscription | undefined;
  #next = 0;

  constructor(nc: NatsConnection) {
    this.#nc = nc;
    this.#prefix = `${createInbox((nc as { options?: { inboxPrefix?: string } }).options?.inboxPrefix)}.`;
  }

  request(subject: string, body: string | Uint8Array, options: MuxRequestOptions): Promise<Msg> {
    this.#subscribe();
    const token = (this.#next++).toString(36);
    return new Promise<Msg>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(token);
        reject(namedError("TimeoutError", `timeout waiting for a reply on ${subject}`));
      }, options.timeoutMs);
      this.#pending.set(token, { subject, resolve, reject, timer });
      try {
        this.#nc.publish(subject, body, { reply: this.#prefix + token, headers: options.headers });
      } catch (error) {
        this.#settle(token)?.reject(error);
      }
    });
  }

  /** Stops listening; requests still waiting fail. */
  close(): void {
    this.#subscription?.unsubscribe();
    this.#subscription = undefined;
    for (const token of [...this.#pending.keys()]) {
      this.#settle(token)?.reject(namedError("RequestError", "the client was closed before the reply came"));
    }
  }

  #subscribe(): void {
    if (this.#subscription && !this.#subscription.isClosed()) return;
    this.#subscription = this.#nc.subscribe(`${this.#prefix}*`, {
      callback: (error, message) => {
        if (error) {
          for (const token of [...this.#pending.keys()]) this.#settle(token)?.reject(error);
          return;
        }
        const request = this.#settle(message.subject.slice(this.#prefix.length));
        if (!request) return; // Late reply to a request that timed out.
        // The server answers a request nobody subscribes to with an empty 503 status message.
        if (message.data.length === 0 && message.headers?.code === 503) {
          request.reject(namedError("NoRespondersError", `no responders: ${request.subject}`));
        } else request.resolve(message);
      },
    });
  }

  #settle(token: string): PendingRequest | undefined {
    const request = this.#pending.get(token);
    if (!request) return undefined;
    this.#pending.delete(token);
    clearTimeout(request.timer);
    return request;
  }
}

interface PendingRequest {
  subject: string;
  resolve: (message: Msg) => void;
  reject: (error: unknown) => void;
  timer: NodeJS.Timeout;
}

function namedError(name: string, message: string): Error {
  const error = new Error(message);
  error.name = name;
  return error;
}
