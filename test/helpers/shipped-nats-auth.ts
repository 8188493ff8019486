import { readFile } from "node:fs/promises";
import type { TestNatsOptions } from "./nats-server";

/** Passwords the shipped configuration reads from nats-server's environment in tests. */
export const RUNTIME_PASSWORD = `runtime-${process.pid}-pw`;
export const CLIENT_PASSWORD = `client-${process.pid}-pw`;

/**
 * The shipped nats.auth.conf as a test server's options: the whole file, minus its listen address
 * and store folder (the test server sets those by flag, and nats-server refuses them twice). The
 * server reads $JETFN_*_PASSWORD from its environment, inherited from this process.
 */
export async function shippedNatsAuth(): Promise<TestNatsOptions> {
  const shipped = await readFile(new URL("../../nats.auth.conf", import.meta.url), "utf8");
  const config = shipped
    .split("\n")
    .filter((line) => !/^\s*(listen|store_dir)\s*:/.test(line))
    .join("\n");
  process.env.JETFN_RUNTIME_PASSWORD = RUNTIME_PASSWORD;
  process.env.JETFN_CLIENT_PASSWORD = CLIENT_PASSWORD;
  return { config, user: "jetfn-runtime", password: RUNTIME_PASSWORD };
}
