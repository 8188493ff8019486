import path from "node:path";
import type { Logger } from "pino";
import type { ResolvedConfig } from "../config";
import { findEmbeddedPostgres, startEmbeddedPostgres } from "../db/embedded-postgres";
import { isNatsReachable, startLocalNatsServer } from "../nats/local-server";
import { JetfnError } from "../support/errors";
import { redactUrl, redactUrls } from "../support/logger";
import { PACKAGE_ROOT } from "../support/package-root";

/** jetfn's nats.conf, used when `dev` has to start a NATS server itself. */
export const NATS_CONFIG_FILE = path.join(PACKAGE_ROOT, "nats.conf");

/** Something started for this process that must be stopped when it exits. */
export interface StartedService {
  name: string;
  stop(): Promise<void>;
}

/** DATABASE_URL, else the embedded Postgres (started if `dev` asks for it). */
export async function resolveDatabaseUrl(
  config: ResolvedConfig,
  logger: Logger,
  started: StartedService[],
  startIfMissing: boolean,
): Promise<string> {
  if (config.databaseUrl) return config.databaseUrl;
  if (!startIfMissing) {
    const running = await findEmbeddedPostgres(config.stateDir);
    if (running) return running;
    throw new JetfnError(
      "E_DATABASE_UNAVAILABLE",
      "DATABASE_URL is not set and no embedded Postgres is running; set DATABASE_URL or run `npx jetfn dev`",
    );
  }
  const starting = startEmbeddedPostgres(config.stateDir);
  // Listed before it answers: a signal while it starts (initdb, pg_ctl start) stops it once it is up,
  // instead of leaving it running after this process exits.
  started.push({
    name: "embedded Postgres",
    stop: async () => {
      const embedded = await starting.catch(() => undefined);
      if (embedded?.startedHere) await embedded.stop();
    },
  });
  const embedded = await starting;
  logger.info(
    { url: redactUrl(embedded.url), dataDir: path.join(config.stateDir, "postgres"), reused: !embedded.startedHere },
    "Using the embedded Postgres.",
  );
  return embedded.url;
}

/**
 * `start`'s database: DATABASE_URL and nothing else. Production must never fall back to a dev
 * embedded Postgres that happens to run on the same machine.
 */
export function requireDatabaseUrl(config: ResolvedConfig): string {
  if (config.databaseUrl) return config.databaseUrl;
  throw new JetfnError(
    "E_CONFIG_INVALID",
    "DATABASE_URL is not set; `jetfn start` needs it (postgres://user:password@host:5432/db). `jetfn dev` uses an embedded Postgres",
  );
}

/** Which database a URL names, for logs: `host:port/db`, never the user or password. */
export function describeDatabase(url: string): string {
  try {
    const parsed = new URL(url);
    const database = decodeURIComponent(parsed.pathname.replace(/^\//, "")) || "(default database)";
    return `${parsed.host || "localhost"}/${database}`;
  } catch {
    return "(a DATABASE_URL that is not a URL)";
  }
}

/** Makes sure NATS answers at NATS_URL, starting `nats-server -c nats.conf` for `dev` if not. */
export async function ensureNats(
  config: ResolvedConfig,
  logger: Logger,
  started: StartedService[],
  startIfMissing: boolean,
): Promise<void> {
  if (await isNatsReachable(config.natsUrl, config.natsAuth)) return;
  if (!startIfMissing) {
    throw new JetfnError(
      "E_UNAVAILABLE",
      `no NATS server answers at ${redactUrls(config.natsUrl)}; start one or set NATS_URL`,
    );
  }
  // nats.conf keeps its store under .jetfn/ relative to where the server runs.
  const server = await startLocalNatsServer(NATS_CONFIG_FILE, config.natsUrl, path.dirname(config.stateDir), logger);
  logger.info(
    { pid: server.pid, config: NATS_CONFIG_FILE, url: redactUrls(config.natsUrl) },
    "Started a local nats-server.",
  );
  started.push({ name: "nats-server", stop: () => server.stop() });
}
