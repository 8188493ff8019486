import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { connect, type NodeConnectionOptions } from "@nats-io/transport-node";
import { natsServerBinary } from "../nats/local-server";
import { type NatsAuth, natsAuthOptions } from "../nats/nats-auth";
import { freePort } from "../support/free-port";
import { stopChild } from "../support/stop-child";

/** A nats-server with JetStream started for tests, on a random port and a temporary store. */
export interface TestNatsServer {
  readonly url: string;
  readonly port: number;
  readonly pid: number | undefined;
  /** Stops the server (SIGTERM to its own pid) and starts it again on the same port and store. */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

/** Options of a test nats-server. */
export interface TestNatsOptions {
  /** Server configuration text (e.g. authorization); listen address and store come from flags. */
  config?: string;
  /** Credentials the readiness probe uses when the config requires them. */
  user?: string;
  password?: string;
  /** Other credentials the readiness probe uses: a token, an NKey or credentials file, TLS files. */
  auth?: NatsAuth;
}

/** Starts `nats-server -js` on loopback, on a free port with a temporary store. */
export async function startNatsServer(options: TestNatsOptions = {}): Promise<TestNatsServer> {
  const port = await freePort();
  const storeDir = await mkdtemp(path.join(tmpdir(), "jetfn-nats-"));
  const args = ["-a", "127.0.0.1", "-p", String(port), "-js", "-sd", storeDir];
  if (options.config) {
    const file = path.join(storeDir, "test.conf");
    await writeFile(file, options.config);
    args.push("-c", file);
  }
  const probe = { user: options.user, pass: options.password, ...(await natsAuthOptions(options.auth)) };
  let child = await launch(args, port, probe);
  return {
    url: `nats://127.0.0.1:${port}`,
    port,
    get pid() {
      return child.pid;
    },
    async restart() {
      await stopChild(child);
      child = await launch(args, port, probe);
    },
    async stop() {
      await stopChild(child);
      await rm(storeDir, { recursive: true, force: true });
    },
  };
}

async function launch(args: string[], port: number, auth: Partial<NodeConnectionOptions>): Promise<ChildProcess> {
  const child = spawn(natsServerBinary(), args, { stdio: "ignore" });
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`nats-server exited with code ${child.exitCode}`);
    try {
      const probe = await connect({ servers: `127.0.0.1:${port}`, reconnect: false, timeout: 500, ...auth });
      await probe.close();
      return child;
    } catch {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  child.kill("SIGKILL");
  throw new Error(`nats-server did not answer on port ${port}`);
}
