import type { QueryAnswer, ThreadRequest } from "./thread-messages";

/** Sends a request to the runtime and resolves with its reply. */
export type Relay = (request: ThreadRequest) => Promise<unknown>;

/**
 * The client drizzle is built on inside a worker thread: it presents the shape the invocation's
 * transaction presents on the main thread (`unsafe(text, params, { prepare })` returning a thenable
 * with `.values()`, and `begin`/`savepoint` for nested transactions), and sends each query to the
 * runtime, which runs it in the invocation's real transaction.
 */
export function createRelayedClient(relay: Relay): unknown {
  let savepoints = 0;
  const unsafe = (text: string, params: unknown[] = [], options?: { prepare?: boolean }): RelayedQuery =>
    new RelayedQuery((mode) => relay({ op: "query", text, params, prepare: options?.prepare, mode }));
  const client = {
    // drizzle installs its type parsers and serializers here; the runtime's own client has the same.
    options: { parsers: {}, serializers: {} },
    unsafe,
    begin: (first: unknown, second?: unknown) =>
      savepoint((typeof first === "function" ? first : second) as SavepointCallback),
    savepoint: (callback: SavepointCallback) => savepoint(callback),
  };
  async function savepoint(callback: SavepointCallback): Promise<unknown> {
    const name = `jetfn_savepoint_${++savepoints}`;
    await unsafe(`savepoint ${name}`);
    try {
      const result = await callback(client);
      await unsafe(`release savepoint ${name}`);
      return result;
    } catch (error) {
      await unsafe(`rollback to savepoint ${name}`);
      throw error;
    }
  }
  return client;
}

type SavepointCallback = (client: unknown) => Promise<unknown>;

/** A relayed query: sent when awaited, like postgres.js's own; `.values()` asks for rows as arrays. */
class RelayedQuery implements PromiseLike<unknown> {
  readonly #send: (mode: "rows" | "values") => Promise<unknown>;
  #mode: "rows" | "values" = "rows";
  #promise: Promise<unknown> | undefined;

  constructor(send: (mode: "rows" | "values") => Promise<unknown>) {
    this.#send = send;
  }

  values(): this {
    this.#mode = "values";
    return this;
  }

  // biome-ignore lint/suspicious/noThenProperty: drizzle awaits this object like a postgres.js query.
  then<A = unknown, B = never>(
    onFulfilled?: ((value: unknown) => A | PromiseLike<A>) | null,
    onRejected?: ((reason: unknown) => B | PromiseLike<B>) | null,
  ): Promise<A | B> {
    this.#promise ??= this.#send(this.#mode).then((answer) => toResult(answer as QueryAnswer));
    return this.#promise.then(onFulfilled, onRejected);
  }
}

/** Rows as postgres.js returns them: an array carrying `count` and `command`. */
function toResult(answer: QueryAnswer): unknown[] {
  return Object.assign(answer.rows, { count: answer.count, command: answer.command });
}
