import { LazyQuery } from "../db/lazy-query";
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
  const unsafe = (text: string, params: unknown[] = [], options?: { prepare?: boolean }): LazyQuery =>
    new LazyQuery((mode) =>
      relay({ op: "query", text, params, prepare: options?.prepare, mode }).then((answer) =>
        toResult(answer as QueryAnswer),
      ),
    );
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

/** Rows as postgres.js returns them: an array carrying `count` and `command`. */
function toResult(answer: QueryAnswer): unknown[] {
  return Object.assign(answer.rows, { count: answer.count, command: answer.command });
}
