import type { PubAck } from "@nats-io/jetstream";
import { type MsgHdrs, type NatsConnection, headers as natsHeaders } from "@nats-io/transport-node";
import { JetfnError } from "../support/errors";
import { CallMux } from "./call-mux";
import { JETSTREAM_TIMEOUT_MS } from "./jetstream-timeout";
import { JETSTREAM_TEMPORARILY_UNAVAILABLE } from "./until-answered";

/** What publishing a job or event needs: nats.js's JetStreamClient fits, and so does StreamPublisher. */
export interface JetStreamPublisher {
  publish(subject: string, data: string | Uint8Array, options: { msgID: string; headers: MsgHdrs }): Promise<PubAck>;
}

/** Longest a publish waits for JetStream to store the message. */
export const PUBLISH_TIMEOUT_MS = JETSTREAM_TIMEOUT_MS;

/**
 * JetStream answered and refused this message (too large for the stream, for example): sending it
 * again unchanged is refused again, unlike a timeout, unless JetStream said it is temporarily
 * unavailable (a stream electing its leader). Recognised by its name, `StreamRefusedError`.
 */
class StreamRefusedError extends JetfnError {
  /** JetStream's own error code (`err_code`), when its answer had one. */
  readonly apiCode: number | undefined;

  constructor(message: string, apiCode: number | undefined) {
    super("E_UNAVAILABLE", message);
    this.name = "StreamRefusedError";
    this.apiCode = apiCode;
  }
}

/** True when JetStream answered a publish that it is temporarily unavailable: stored nothing, may store it later. */
export function refusedForNow(error: unknown): boolean {
  return error instanceof StreamRefusedError && error.apiCode === JETSTREAM_TEMPORARILY_UNAVAILABLE;
}

/**
 * Publishes to JetStream and waits for the stored acknowledgement, like `js.publish()`, over
 * CallMux: nats.js builds two Errors with stack traces per publish, which capped enqueue rates.
 */
export class StreamPublisher implements JetStreamPublisher {
  readonly #mux: CallMux;

  constructor(nc: NatsConnection) {
    this.#mux = new CallMux(nc);
  }

  async publish(subject: string, data: string | Uint8Array, options: { msgID: string; headers?: MsgHdrs }) {
    const header = options.headers ?? natsHeaders();
    header.set("Nats-Msg-Id", options.msgID);
    let reply: Awaited<ReturnType<CallMux["request"]>>;
    try {
      reply = await this.#mux.request(subject, data, { timeoutMs: PUBLISH_TIMEOUT_MS, headers: header });
    } catch (error) {
      if ((error as Error).name === "NoRespondersError") {
        throw new JetfnError(
          "E_UNAVAILABLE",
          `no JetStream stream stores ${subject} (a jetfn runtime creates JETFN_JOBS when it starts)`,
          { cause: error },
        );
      }
      throw new JetfnError("E_UNAVAILABLE", `publishing to ${subject}: ${(error as Error).message}`, { cause: error });
    }
    const answer = reply.json<Partial<PubAck> & { error?: { err_code?: number; description?: string } }>();
    if (answer.error || !answer.stream) {
      throw new StreamRefusedError(
        `JetStream refused the message on ${subject}: ${answer.error?.description ?? "no stream in its answer"}`,
        answer.error?.err_code,
      );
    }
    return { stream: answer.stream, seq: answer.seq ?? 0, duplicate: answer.duplicate === true, domain: answer.domain };
  }

  /** Stops listening for answers; publishes still waiting fail. */
  close(): void {
    this.#mux.close();
  }
}
