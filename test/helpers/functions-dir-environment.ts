import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll } from "vitest";
import type { JetfnClient } from "../../runtime/sdk/client";
import { createTestEnvironment, type TestEnvironment } from "./environment";

/** A test file's environment, a client on it, and a folder for the function files its tests write. */
export interface FunctionsDirEnvironment {
  env: TestEnvironment;
  client: JetfnClient;
  /** An empty temporary folder of the file's own, to start runtimes on (`functionsDir`). */
  dir: string;
}

/**
 * For a test file whose tests write their own functions: an environment, a client and a temporary
 * folder (named `<prefix>…`) made before the file's tests, closed and removed after them. Returns
 * a getter, valid once the tests run.
 */
export function useFunctionsDirEnvironment(prefix: string): () => FunctionsDirEnvironment {
  let env: TestEnvironment | undefined;
  let dir: string | undefined;
  let made: FunctionsDirEnvironment | undefined;
  beforeAll(async () => {
    env = await createTestEnvironment();
    dir = await mkdtemp(path.join(tmpdir(), prefix));
    made = { env, client: await env.client(), dir };
  });
  afterAll(async () => {
    await env?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });
  return () => {
    if (!made) throw new Error("the environment is made in beforeAll; call the getter inside a test");
    return made;
  };
}
