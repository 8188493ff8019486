import path from "node:path";
import type { Logger } from "pino";
import type { ResolvedConfig } from "../config";
import { findEmbeddedPostgres, startEmbeddedPostgres } from "../db/embedded-postgres";
import { JetfnError } from "../errors";
import { redactUrl, redactUrls } from "../logger";
import { isNatsReachable, startLocalNatsServer } from "../nats/local-server";
import { PACKAGE_ROOT } from "../package-root";

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
  const embedded = await startEmbeddedPostgres(config.stateDir);
  logger.info(
    { url: redactUrl(embedded.url), dataDir: path.join(config.stateDir, "postgres"), reused: !embedded.startedHere },
    "Using the embedded Postgres.",
  );
  if (embedded.startedHere) started.push({ name: "embedded Postgres", stop: () => embedded.stop() });
  return embedded.url;
}

/** Makes sure NATS answers at NATS_URL, starting `nats-server -c nats.conf` for `dev` if not. */
export async function ensureNats(
  config: ResolvedConfig,
  logger: Logger,
  started: StartedService[],
  startIfMissing: boolean,
): Promise<void> {
  if (await isNatsReachable(config.natsUrl, config.natsUser, config.natsPassword)) return;
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
