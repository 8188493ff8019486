import {
  startNatsServer as startServer,
  type TestNatsOptions,
  type TestNatsServer,
} from "../../runtime/testing/nats-server";
import { stopWhenTestEnds } from "./test-scope";

export type { TestNatsOptions, TestNatsServer };

/**
 * Starts a nats-server with the launcher function authors get from runtime/testing; started
 * inside a test, it is stopped when the test ends.
 */
export async function startNatsServer(options: TestNatsOptions = {}): Promise<TestNatsServer> {
  const server = await startServer(options);
  stopWhenTestEnds(() => server.stop());
  return server;
}
