import { createServer, type Server, type Socket, connect as tcpConnect } from "node:net";
import { stopWhenTestEnds } from "./test-scope";

/**
 * A TCP proxy on a free loopback port to one target port, which the test can cut off as a network
 * partition does and heal again: while cut, nothing crosses in either direction and nothing is
 * closed or refused (TCP flow control holds the bytes, as a link that silently drops packets makes
 * the senders retransmit), and new connections are accepted but lead nowhere. Healed, the held bytes
 * flow on, and a side that gave up meanwhile is closed on the other. It lives in the test's own
 * process, so it needs no privileges and nothing outlives the test.
 */
export interface PartitionProxy {
  readonly port: number;
  readonly url: string;
  readonly cutOff: boolean;
  /** Stops every byte, both ways, on every connection, and connects new ones nowhere. */
  cut(): void;
  /** Lets the bytes flow again and connects the connections made while cut. */
  heal(): void;
  /** Closes every connection made so far, both sides, as a server restart does; new ones are accepted. */
  reset(): void;
  close(): Promise<void>;
}

interface Pair {
  client: Socket;
  upstream: Socket | undefined;
  /** The upstream connection is made. */
  connected: boolean;
  /** Bytes cross (piped both ways). */
  flowing: boolean;
}

/** Starts a proxy to `127.0.0.1:targetPort`; started inside a test, it is closed when the test ends. */
export async function startPartitionProxy(targetPort: number): Promise<PartitionProxy> {
  const proxy = new CuttableProxy(targetPort);
  const port = await proxy.listen();
  stopWhenTestEnds(() => proxy.close());
  return Object.assign(proxy, { port, url: `nats://127.0.0.1:${port}` });
}

class CuttableProxy {
  readonly #targetPort: number;
  readonly #pairs = new Set<Pair>();
  readonly #server: Server;
  #cut = false;

  constructor(targetPort: number) {
    this.#targetPort = targetPort;
    this.#server = createServer({ pauseOnConnect: true }, (client) => this.#accept(client));
  }

  get cutOff(): boolean {
    return this.#cut;
  }

  listen(): Promise<number> {
    return new Promise((resolve, reject) => {
      this.#server.once("error", reject);
      this.#server.listen(0, "127.0.0.1", () => {
        const address = this.#server.address();
        resolve(typeof address === "object" && address ? address.port : 0);
      });
    });
  }

  cut(): void {
    this.#cut = true;
    for (const pair of this.#pairs) {
      if (!pair.flowing || !pair.upstream) continue;
      pair.flowing = false;
      pair.client.unpipe(pair.upstream);
      pair.upstream.unpipe(pair.client);
      pair.client.pause();
      pair.upstream.pause();
    }
  }

  heal(): void {
    this.#cut = false;
    for (const pair of this.#pairs) {
      if (!pair.upstream) this.#connect(pair);
      else if (pair.connected) this.#flow(pair);
    }
  }

  reset(): void {
    for (const pair of [...this.#pairs]) this.#drop(pair);
  }

  async close(): Promise<void> {
    for (const pair of this.#pairs) {
      pair.client.destroy();
      pair.upstream?.destroy();
    }
    this.#pairs.clear();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  #accept(client: Socket): void {
    const pair: Pair = { client, upstream: undefined, connected: false, flowing: false };
    this.#pairs.add(pair);
    client.on("error", () => this.#drop(pair));
    client.on("close", () => this.#drop(pair));
    if (!this.#cut) this.#connect(pair);
  }

  #connect(pair: Pair): void {
    const upstream = tcpConnect({ port: this.#targetPort, host: "127.0.0.1" });
    pair.upstream = upstream;
    upstream.on("error", () => this.#drop(pair));
    upstream.on("close", () => this.#drop(pair));
    upstream.pause();
    upstream.once("connect", () => {
      pair.connected = true;
      if (!this.#cut) this.#flow(pair);
    });
  }

  #flow(pair: Pair): void {
    if (pair.flowing) return;
    pair.flowing = true;
    const upstream = pair.upstream as Socket;
    pair.client.pipe(upstream);
    upstream.pipe(pair.client);
    pair.client.resume();
    upstream.resume();
  }

  #drop(pair: Pair): void {
    if (!this.#pairs.delete(pair)) return;
    pair.client.destroy();
    pair.upstream?.destroy();
  }
}
