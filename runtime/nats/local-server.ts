import { type ChildProcess, spawn } from "node:child_process";
import type { Logger } from "pino";
import { resolveNatsServerBinary } from "../config";
import { JetfnError } from "../support/errors";
import { stopChild } from "../support/stop-child";
import { connectNats } from "./connection";
import type { NatsAuth } from "./nats-auth";

/** A nats-server child process started by `jetfn dev`. */
export interface LocalNatsServer {
  readonly pid: number | undefined;
  stop(): Promise<void>;
}

/** True when a NATS server answers at `url` within a second. */
export async function isNatsReachable(url: string, auth?: NatsAuth): Promise<boolean> {
  try {
    const connection = await connectNats({ url, auth, name: "jetfn-probe" });
    await connection.close();
    return true;
  } catch (error) {
    // An unreadable credentials file is the operator's to fix, not a missing server.
    if ((error as { code?: unknown }).code === "E_CONFIG_INVALID") throw error;
    return false;
  }
}

/** The nats-server executable jetfn starts (`dev`, `jetfn/testing`): `NATS_SERVER_BIN`, else from PATH. */
export function natsServerBinary(): string {
  return resolveNatsServerBinary();
}

/**
 * Starts `nats-server -c <configFile>` in `cwd` (the config's relative store_dir resolves there),
 * listening where `url` points, and waits until it answers. It runs in its own process group, so
 * Ctrl-C reaches only the runtime, which drains first and then stops it.
 */
export async function startLocalNatsServer(
  configFile: string,
  url: string,
  cwd: string,
  logger: Logger,
): Promise<LocalNatsServer> {
  const { hostname, port } = new URL(url.split(",")[0] as string);
  const args = ["-c", configFile, "-a", hostname, "-p", port || "4222"];
  const child = spawn(natsServerBinary(), args, { cwd, stdio: ["ignore", "pipe", "pipe"], detached: true });
  const recent: string[] = [];
  const failed = new Promise<never>((_, reject) => {
    child.once("error", (error: NodeJS.ErrnoException) => {
      reject(
        error.code === "ENOENT"
          ? new JetfnError(
              "E_UNAVAILABLE",
              `no NATS server answers at NATS_URL and \`${natsServerBinary()}\` is not installed: install it (Debian: apt install nats-server) or set NATS_URL`,
            )
          : error,
      );
    });
    child.once("exit", (code) =>
      reject(new JetfnError("E_UNAVAILABLE", `nats-server exited at start with code ${code}: ${recent.join(" | ")}`)),
    );
  });
  forwardOutput(child, logger, recent);
  const deadline = Date.now() + 10_000;
  const ready = (async () => {
    while (Date.now() < deadline) {
      if (await isNatsReachable(url)) return;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    throw new JetfnError("E_UNAVAILABLE", `nats-server started but did not answer at ${url} within 10s`);
  })();
  try {
    await Promise.race([ready, failed]);
  } catch (error) {
    child.kill("SIGTERM");
    throw error;
  }
  failed.catch(() => undefined);
  return {
    pid: child.pid,
    stop: () => stopChild(child),
  };
}

/** Logs the server's output at debug level, keeping the last lines for an error message. */
function forwardOutput(child: ChildProcess, logger: Logger, recent: string[]): void {
  const log = logger.child({ service: "nats-server" });
  for (const stream of [child.stdout, child.stderr]) {
    stream?.setEncoding("utf8");
    stream?.on("data", (chunk: string) => {
      for (const line of chunk.split("\n")) {
        if (!line.trim()) continue;
        log.debug(line.trim());
        recent.push(line.trim());
        if (recent.length > 3) recent.shift();
      }
    });
  }
}
