import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { natsServerBinary } from "../../runtime/nats/local-server";
import { stopChild } from "../../runtime/support/stop-child";
import { freePort } from "./free-port";
import { stopWhenTestEnds } from "./test-scope";

/** A nats-server with JetStream whose one user a test can refuse subscriptions to while it runs. */
export interface PermissionedNatsServer {
  readonly url: string;
  /** Connects as the server's user. */
  connect(): Promise<NatsConnection>;
  /** Refuses the user's subscriptions to `subjects` from now on: the server drops the ones it has. */
  refuseSubscriptions(subjects: string[]): Promise<void>;
  stop(): Promise<void>;
}

const USER = { user: "jetfn", pass: "jetfn-test" };

/**
 * Starts nats-server with a config file that takes the user's denied subjects from an included
 * file, and reloads it (SIGHUP to its own pid) when they change. The test server of
 * runtime/testing cannot reload: its store directory is a flag, which a reload would drop.
 */
export async function startPermissionedNatsServer(): Promise<PermissionedNatsServer> {
  const dir = await mkdtemp(path.join(tmpdir(), "jetfn-nats-permissions-"));
  const port = await freePort();
  const denied = path.join(dir, "denied.conf");
  const writeDenied = (subjects: string[]) => writeFile(denied, `DENIED: ${JSON.stringify(subjects)}\n`);
  await writeDenied(["jetfn.test.nothing"]);
  const config = path.join(dir, "server.conf");
  await writeFile(
    config,
    [
      `listen: "127.0.0.1:${port}"`,
      `jetstream { store_dir: ${JSON.stringify(path.join(dir, "store"))} }`,
      "include ./denied.conf",
      `authorization { users = [ { user: "${USER.user}", password: "${USER.pass}", permissions: { subscribe: { allow: [">"], deny: $DENIED } } } ] }`,
      "",
    ].join("\n"),
  );
  const child = await launch(config, port);
  const url = `nats://127.0.0.1:${port}`;
  const server: PermissionedNatsServer = {
    url,
    connect: () => connect({ servers: url, ...USER, maxReconnectAttempts: -1, reconnectTimeWait: 250 }),
    async refuseSubscriptions(subjects) {
      await writeDenied(subjects);
      child.kill("SIGHUP");
    },
    async stop() {
      await stopChild(child);
      await rm(dir, { recursive: true, force: true });
    },
  };
  stopWhenTestEnds(() => server.stop());
  return server;
}

async function launch(config: string, port: number): Promise<ChildProcess> {
  const child = spawn(natsServerBinary(), ["-c", config], { stdio: "ignore" });
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`nats-server exited with code ${child.exitCode}`);
    try {
      const probe = await connect({ servers: `127.0.0.1:${port}`, ...USER, reconnect: false, timeout: 500 });
      await probe.close();
      return child;
    } catch {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  await stopChild(child);
  throw new Error(`nats-server did not answer on port ${port}`);
}

/**
 * Makes `server` drop the subscriptions of every push consumer on `stream` so far (the watches of a
 * key-value bucket, as a permissions change would), and waits until it sees none of them bound:
 * from here those watches hear nothing.
 */
export async function dropWatches(server: PermissionedNatsServer, nc: NatsConnection, stream: string): Promise<void> {
  const manager = await jetstreamManager(nc);
  const watches = (await manager.consumers.list(stream).next()).filter((info) => info.config.deliver_subject);
  if (watches.length === 0) throw new Error(`no watch on ${stream} to drop`);
  await server.refuseSubscriptions(watches.map((info) => info.config.deliver_subject as string));
  const deadline = Date.now() + 10_000;
  for (;;) {
    const bound = await Promise.all(
      watches.map((info) =>
        manager.consumers.info(stream, info.name).then(
          (now) => now.push_bound === true,
          () => false,
        ),
      ),
    );
    if (!bound.includes(true)) return;
    if (Date.now() > deadline) throw new Error(`the server still delivers to a watch on ${stream}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
