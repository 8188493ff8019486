import { createServer, type Server, type Socket, connect as tcpConnect } from "node:net";
import { stopWhenTestEnds } from "./test-scope";

/**
 * A TCP proxy to a nats-server that loses chosen requests: it reads the NATS protocol clients send,
 * and drops a publication whose subject `drop` picks, so the server never sees it and the client
 * waits out its whole request timeout, as with a server too loaded to answer in time (or, started
 * with `startDelayingProxy`, holds it back a while). Everything else, both ways, passes unchanged.
 * It lives in the test's own process and stops with the test.
 */
export interface DroppingProxy {
  readonly url: string;
  /** Subjects of the messages dropped so far, in order. */
  readonly dropped: readonly string[];
  /** Subjects of every message clients published through the proxy (dropped ones included), in order. */
  readonly published: readonly string[];
  close(): Promise<void>;
}

/**
 * Starts a proxy to `127.0.0.1:targetPort` that drops each publication for which `drop` returns
 * true (it is asked once per publication, in order, so it can pick the first of a kind); started
 * inside a test, it is closed when the test ends.
 */
export async function startDroppingProxy(
  targetPort: number,
  drop: (subject: string) => boolean,
): Promise<DroppingProxy> {
  return startFilteringProxy(targetPort, (subject) => (drop(subject) ? "drop" : 0));
}

/**
 * Starts a proxy to `127.0.0.1:targetPort` that holds each publication back for `delayOf(subject)`
 * milliseconds before the server sees it (0: at once; "drop": never), as a server slow to answer
 * those requests does; started inside a test, it is closed when the test ends.
 */
export async function startDelayingProxy(
  targetPort: number,
  delayOf: (subject: string) => number | "drop",
): Promise<DroppingProxy> {
  return startFilteringProxy(targetPort, delayOf);
}

/** A proxy that drops (`"drop"`), delays (milliseconds) or passes (0) each publication. */
async function startFilteringProxy(
  targetPort: number,
  decide: (subject: string) => number | "drop",
): Promise<DroppingProxy> {
  const dropped: string[] = [];
  const published: string[] = [];
  const sockets = new Set<Socket>();
  const held = new Set<NodeJS.Timeout>();
  const server: Server = createServer((client) => {
    const upstream = tcpConnect({ port: targetPort, host: "127.0.0.1" });
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on("error", () => undefined);
      socket.on("close", () => {
        client.destroy();
        upstream.destroy();
        sockets.delete(socket);
      });
    }
    upstream.pipe(client);
    const parser = new ClientProtocol((subject) => {
      published.push(subject);
      const decision = decide(subject);
      if (decision === "drop") dropped.push(subject);
      return decision;
    });
    client.on("data", (chunk: Buffer) => {
      for (const { bytes, delayMs } of parser.read(chunk)) {
        if (delayMs === 0) {
          upstream.write(bytes);
          continue;
        }
        const timer = setTimeout(() => {
          held.delete(timer);
          upstream.write(bytes);
        }, delayMs);
        held.add(timer);
      }
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : 0;
  const close = async (): Promise<void> => {
    for (const timer of held) clearTimeout(timer);
    for (const socket of sockets) socket.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
  stopWhenTestEnds(close);
  return { url: `nats://127.0.0.1:${port}`, dropped, published, close };
}

/** A proxy to a nats-server's `port` that loses the first request to `subject`. */
export function losingFirst(port: number, subject: string): Promise<DroppingProxy> {
  let lost = false;
  return startDroppingProxy(port, (published) => {
    if (lost || published !== subject) return false;
    lost = true;
    return true;
  });
}

const CRLF = Buffer.from("\r\n");

/**
 * Splits what a client sends into protocol operations: a line, and for PUB and HPUB the payload
 * after it (`PUB <subject> [reply] <size>`, `HPUB <subject> [reply] <header size> <total size>`).
 */
class ClientProtocol {
  #pending = Buffer.alloc(0);
  readonly #decide: (subject: string) => number | "drop";

  constructor(decide: (subject: string) => number | "drop") {
    this.#decide = decide;
  }

  /** The complete operations in `chunk` (with what came before) to pass on, each with its delay. */
  read(chunk: Buffer): Array<{ bytes: Buffer; delayMs: number }> {
    this.#pending = Buffer.concat([this.#pending, chunk]);
    const kept: Array<{ bytes: Buffer; delayMs: number }> = [];
    for (;;) {
      const lineEnd = this.#pending.indexOf(CRLF);
      if (lineEnd < 0) return kept;
      const words = this.#pending.subarray(0, lineEnd).toString().trim().split(/\s+/);
      const operation = words[0]?.toUpperCase();
      const payload = operation === "PUB" || operation === "HPUB" ? Number(words.at(-1)) + CRLF.length : 0;
      const end = lineEnd + CRLF.length + payload;
      if (this.#pending.length < end) return kept;
      const bytes = this.#pending.subarray(0, end);
      this.#pending = this.#pending.subarray(end);
      const decision = payload === 0 ? 0 : this.#decide(words[1] ?? "");
      if (decision !== "drop") kept.push({ bytes, delayMs: decision });
    }
  }
}
