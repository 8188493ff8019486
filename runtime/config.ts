import path from "node:path";
import { checkNatsAuth, type NatsAuth } from "./nats/nats-auth";
import { DEFAULT_INBOX_PREFIXES } from "./nats/reply-guard";
import { ALLOWED_REPLICAS, type Replication } from "./nats/stream-replicas";
import { type Duration, parseDuration } from "./support/duration";
import { JetfnError } from "./support/errors";
import { DEFAULT_LOG_LIMITS, type LogLimits } from "./support/log-budget";

/** Everything a runtime can be configured with. Every field is optional. */
export interface RuntimeOptions {
  /** NATS server(s). @default process.env.NATS_URL ?? "nats://127.0.0.1:4222" */
  natsUrl?: string;
  /** NATS user and password, when the server requires them. @default process.env.NATS_USER / NATS_PASSWORD */
  natsUser?: string;
  natsPassword?: string;
  /** NATS token, for a server with `authorization { token }`. @default process.env.NATS_TOKEN */
  natsToken?: string;
  /** Path of a NATS credentials file (user JWT and NKey seed). @default process.env.NATS_CREDS */
  natsCredsFile?: string;
  /** Path of a file holding a NATS user NKey seed (`SU...`). @default process.env.NATS_NKEY */
  natsNkeyFile?: string;
  /** CA certificate(s) the NATS server's certificate is checked against (PEM file). @default process.env.NATS_CA */
  natsCaFile?: string;
  /** Client certificate for NATS TLS (PEM file). @default process.env.NATS_CERT */
  natsCertFile?: string;
  /** Private key of the client certificate (PEM file). @default process.env.NATS_KEY */
  natsKeyFile?: string;
  /** Postgres connection string; undefined means the embedded database under `stateDir`. @default process.env.DATABASE_URL */
  databaseUrl?: string;
  /** Folder of function files. @default process.env.JETFN_FUNCTIONS ?? "./functions" */
  functionsDir?: string;
  /**
   * The app's migrations: drizzle-kit's `out` folder (drizzle.config.ts), applied by `jetfn migrate`
   * after jetfn's own; a folder that does not exist holds none. @default process.env.JETFN_MIGRATIONS ?? "./drizzle"
   */
  migrationsDir?: string;
  /**
   * The app's drizzle schema module (tables and `relations`), loaded so `ctx.db.query` answers
   * relational queries; a file that does not exist means none. @default process.env.JETFN_SCHEMA ?? "./schema/app.ts"
   */
  schemaFile?: string;
  /** pino level. @default process.env.LOG_LEVEL ?? "info" */
  logLevel?: string;
  /** `pretty` for people, `json` for machines. @default "json" */
  logFormat?: "pretty" | "json";
  /** Redeploy functions when their files change. @default false */
  watch?: boolean;
  /** Folder for embedded services' data. @default ".jetfn" */
  stateDir?: string;
  /** JetStream stream capturing `fn.job.>`. @default "JETFN_JOBS" */
  streamName?: string;
  /** How long the stream keeps jobs (also the replay window). @default process.env.JETFN_JOB_RETENTION ?? "7d" */
  jobRetention?: Duration;
  /**
   * Window in which a repeated `Nats-Msg-Id` is dropped as a duplicate; at least a minute (a
   * singleton whose publish went unconfirmed is published again under its id within it). @default "2m"
   */
  duplicateWindow?: Duration;
  /** How long shutdown waits for in-flight invocations before aborting them. @default process.env.JETFN_SHUTDOWN_GRACE ?? "30s" */
  shutdownGrace?: Duration;
  /**
   * Longest JetStream waits for a job's ack before giving it to another runtime (a crashed
   * runtime's jobs come back after this). @default process.env.JETFN_MAX_ACK_WAIT ?? "10s"
   */
  maxAckWait?: Duration;
  /** Postgres connections per runtime process. @default process.env.JETFN_DB_POOL ?? 20 */
  databasePoolSize?: number;
  /** Queue group shared by all runtimes answering `fn.call.*`. @default "jetfn" */
  queueGroup?: string;
  /** Postgres schemas whose tables are audited. @default process.env.JETFN_AUDIT_SCHEMAS ?? "public" */
  auditSchemas?: string[];
  /** The dashboard's access token; random per start when unset. @default process.env.JETFN_DASHBOARD_TOKEN */
  dashboardToken?: string;
  /**
   * More names the dashboard answers to, for a proxy in front of it (`name` or `name:port`); requests
   * naming any other host are refused. @default process.env.JETFN_DASHBOARD_HOSTS (comma-separated), else none
   */
  dashboardHosts?: string[];
  /**
   * Serve Prometheus metrics (`/metrics`) and the health checks (`/livez`, `/readyz`) on this port;
   * off when unset. @default process.env.JETFN_METRICS_PORT
   */
  metricsPort?: number;
  /** Address the metrics and health endpoint listens on. @default process.env.JETFN_METRICS_HOST ?? "127.0.0.1" */
  metricsHost?: string;
  /** Lines a handler may log per invocation; the rest are dropped and counted. @default process.env.JETFN_LOG_LINES ?? 1000 */
  logLines?: number;
  /** Characters a handler may log per invocation. @default process.env.JETFN_LOG_BYTES ?? 1048576 */
  logBytes?: number;
  /** Characters per log line of a handler; longer lines are cut with a marker. @default process.env.JETFN_LOG_LINE_BYTES ?? 16384 */
  logLineBytes?: number;
  /** Longest a function file may take to load before it is refused. @default process.env.JETFN_LOAD_TIMEOUT ?? "10s" */
  loadTimeout?: Duration;
  /**
   * Reply-subject prefixes the runtime answers to besides `_INBOX.` and `_R_.` (for clients with
   * their own nats.js `inboxPrefix`); a request with any other reply subject is dropped.
   * @default process.env.JETFN_INBOX_PREFIXES (comma-separated), none
   */
  inboxPrefixes?: string[];
  /**
   * Copies of every stream and key-value bucket jetfn creates (1, 3 or 5); more than 1 needs a NATS
   * cluster. Raising it scales existing streams up at the next start; jetfn never lowers it.
   * @default process.env.JETFN_REPLICAS ?? 1
   */
  replicas?: number;
  /** Server tags the copies must be placed on. @default process.env.JETFN_PLACEMENT_TAGS (comma-separated), none */
  placementTags?: string[];
}

/** Configuration with every value present and checked. */
export interface ResolvedConfig {
  readonly natsUrl: string;
  /** How the runtime authenticates to NATS (user and password, token, credentials, NKey, TLS). */
  readonly natsAuth: NatsAuth;
  readonly databaseUrl: string | undefined;
  readonly functionsDir: string;
  readonly migrationsDir: string;
  readonly schemaFile: string;
  readonly logLevel: string;
  readonly logFormat: "pretty" | "json";
  readonly watch: boolean;
  readonly stateDir: string;
  readonly streamName: string;
  readonly jobRetentionMs: number;
  readonly duplicateWindowMs: number;
  readonly shutdownGraceMs: number;
  readonly maxAckWaitMs: number;
  readonly databasePoolSize: number;
  readonly queueGroup: string;
  readonly auditSchemas: readonly string[];
  readonly dashboardToken: string | undefined;
  readonly dashboardHosts: readonly string[];
  readonly metricsPort: number | undefined;
  readonly metricsHost: string;
  readonly logLimits: LogLimits;
  readonly loadTimeoutMs: number;
  /** Every reply-subject prefix the runtime answers to, the defaults first; each ends with a dot. */
  readonly inboxPrefixes: readonly string[];
  /** Replicas and placement of every stream and bucket jetfn creates. */
  readonly replication: Replication;
}

export const DEFAULT_NATS_URL = "nats://127.0.0.1:4222";
export const DEFAULT_FUNCTIONS_DIR = "./functions";
/** drizzle-kit's own default `out`. */
export const DEFAULT_APP_MIGRATIONS_DIR = "./drizzle";
export const DEFAULT_SCHEMA_FILE = "./schema/app.ts";
export const DEFAULT_LOG_LEVEL = "info";
export const DEFAULT_STATE_DIR = ".jetfn";
export const DEFAULT_STREAM_NAME = "JETFN_JOBS";
export const DEFAULT_JOB_RETENTION: Duration = "7d";
export const DEFAULT_DUPLICATE_WINDOW: Duration = "2m";
/**
 * Shortest duplicate window: a singleton whose publish JetStream did not confirm is published again
 * under the same id for up to about 40 s after (flow/singleton.ts: 20 s of tries, each a read, a
 * write and a publish of up to 5 s), and a client's retry of an enqueue comes within its 20 s wait;
 * past the window either would store a second copy.
 */
export const MIN_DUPLICATE_WINDOW_MS = 60_000;
export const DEFAULT_SHUTDOWN_GRACE: Duration = "30s";
export const DEFAULT_MAX_ACK_WAIT: Duration = "10s";
export const DEFAULT_DATABASE_POOL_SIZE = 20;
export const DEFAULT_QUEUE_GROUP = "jetfn";
export const DEFAULT_LOAD_TIMEOUT: Duration = "10s";
export const DEFAULT_REPLICAS = 1;
/** Loopback, so metrics are never exposed by accident; `0.0.0.0` (or `::`) for a scraper elsewhere. */
export const DEFAULT_METRICS_HOST = "127.0.0.1";
const LOG_LEVELS = new Set(["fatal", "error", "warn", "info", "debug", "trace", "silent"]);

/** Merges options over environment variables over defaults, validates, and freezes the result. */
export function resolveConfig(options: RuntimeOptions = {}, env: NodeJS.ProcessEnv = process.env): ResolvedConfig {
  const config: ResolvedConfig = {
    natsUrl: options.natsUrl ?? nonEmpty(env.NATS_URL) ?? DEFAULT_NATS_URL,
    natsAuth: checkNatsAuth({
      user: options.natsUser ?? nonEmpty(env.NATS_USER),
      password: options.natsPassword ?? nonEmpty(env.NATS_PASSWORD),
      token: options.natsToken ?? nonEmpty(env.NATS_TOKEN),
      credsFile: options.natsCredsFile ?? nonEmpty(env.NATS_CREDS),
      nkeyFile: options.natsNkeyFile ?? nonEmpty(env.NATS_NKEY),
      caFile: options.natsCaFile ?? nonEmpty(env.NATS_CA),
      certFile: options.natsCertFile ?? nonEmpty(env.NATS_CERT),
      keyFile: options.natsKeyFile ?? nonEmpty(env.NATS_KEY),
    }),
    databaseUrl: options.databaseUrl ?? nonEmpty(env.DATABASE_URL),
    functionsDir: path.resolve(options.functionsDir ?? nonEmpty(env.JETFN_FUNCTIONS) ?? DEFAULT_FUNCTIONS_DIR),
    migrationsDir: path.resolve(options.migrationsDir ?? nonEmpty(env.JETFN_MIGRATIONS) ?? DEFAULT_APP_MIGRATIONS_DIR),
    schemaFile: path.resolve(options.schemaFile ?? nonEmpty(env.JETFN_SCHEMA) ?? DEFAULT_SCHEMA_FILE),
    logLevel: options.logLevel ?? nonEmpty(env.LOG_LEVEL) ?? DEFAULT_LOG_LEVEL,
    logFormat: options.logFormat ?? "json",
    watch: options.watch ?? false,
    stateDir: path.resolve(options.stateDir ?? DEFAULT_STATE_DIR),
    streamName: options.streamName ?? DEFAULT_STREAM_NAME,
    jobRetentionMs: duration(
      "JETFN_JOB_RETENTION",
      options.jobRetention ?? nonEmpty(env.JETFN_JOB_RETENTION) ?? DEFAULT_JOB_RETENTION,
    ),
    duplicateWindowMs: duplicateWindow(options.duplicateWindow ?? DEFAULT_DUPLICATE_WINDOW),
    shutdownGraceMs: duration(
      "JETFN_SHUTDOWN_GRACE",
      options.shutdownGrace ?? nonEmpty(env.JETFN_SHUTDOWN_GRACE) ?? DEFAULT_SHUTDOWN_GRACE,
    ),
    maxAckWaitMs: duration(
      "JETFN_MAX_ACK_WAIT",
      options.maxAckWait ?? nonEmpty(env.JETFN_MAX_ACK_WAIT) ?? DEFAULT_MAX_ACK_WAIT,
    ),
    databasePoolSize:
      options.databasePoolSize ?? integer("JETFN_DB_POOL", env.JETFN_DB_POOL) ?? DEFAULT_DATABASE_POOL_SIZE,
    queueGroup: options.queueGroup ?? DEFAULT_QUEUE_GROUP,
    auditSchemas: Object.freeze(options.auditSchemas ?? list(env.JETFN_AUDIT_SCHEMAS) ?? ["public"]),
    dashboardToken: options.dashboardToken ?? nonEmpty(env.JETFN_DASHBOARD_TOKEN),
    dashboardHosts: Object.freeze(options.dashboardHosts ?? list(env.JETFN_DASHBOARD_HOSTS) ?? []),
    metricsPort: options.metricsPort ?? integer("JETFN_METRICS_PORT", env.JETFN_METRICS_PORT),
    metricsHost: options.metricsHost ?? nonEmpty(env.JETFN_METRICS_HOST) ?? DEFAULT_METRICS_HOST,
    logLimits: Object.freeze({
      lines: options.logLines ?? positive("JETFN_LOG_LINES", env.JETFN_LOG_LINES) ?? DEFAULT_LOG_LIMITS.lines,
      bytes: options.logBytes ?? positive("JETFN_LOG_BYTES", env.JETFN_LOG_BYTES) ?? DEFAULT_LOG_LIMITS.bytes,
      lineBytes:
        options.logLineBytes ??
        positive("JETFN_LOG_LINE_BYTES", env.JETFN_LOG_LINE_BYTES) ??
        DEFAULT_LOG_LIMITS.lineBytes,
    }),
    loadTimeoutMs: duration(
      "JETFN_LOAD_TIMEOUT",
      options.loadTimeout ?? nonEmpty(env.JETFN_LOAD_TIMEOUT) ?? DEFAULT_LOAD_TIMEOUT,
    ),
    inboxPrefixes: Object.freeze([
      ...DEFAULT_INBOX_PREFIXES,
      ...(options.inboxPrefixes ?? list(env.JETFN_INBOX_PREFIXES) ?? []).map(inboxPrefix),
    ]),
    replication: Object.freeze({
      replicas: options.replicas ?? integer("JETFN_REPLICAS", env.JETFN_REPLICAS) ?? DEFAULT_REPLICAS,
      placementTags: Object.freeze(options.placementTags ?? list(env.JETFN_PLACEMENT_TAGS) ?? []),
    }),
  };
  if (!LOG_LEVELS.has(config.logLevel)) {
    throw new JetfnError(
      "E_CONFIG_INVALID",
      `LOG_LEVEL "${config.logLevel}" is not one of ${[...LOG_LEVELS].join(", ")}`,
    );
  }
  if (!/^[A-Za-z0-9_-]+$/.test(config.streamName)) {
    throw new JetfnError(
      "E_CONFIG_INVALID",
      `stream name "${config.streamName}" may only hold letters, digits, - and _`,
    );
  }
  if (
    config.metricsPort !== undefined &&
    !(Number.isInteger(config.metricsPort) && config.metricsPort >= 1 && config.metricsPort <= 65_535)
  ) {
    throw new JetfnError(
      "E_CONFIG_INVALID",
      `JETFN_METRICS_PORT must be a port from 1 to 65535, got ${config.metricsPort}`,
    );
  }
  if (config.databasePoolSize < 1) {
    throw new JetfnError("E_CONFIG_INVALID", "JETFN_DB_POOL must be at least 1");
  }
  // Options given in code skip the parsing of their variables: checked here, whichever set them.
  for (const [name, value] of Object.entries(config.logLimits)) {
    if (!(Number.isSafeInteger(value) && value >= 1)) {
      throw new JetfnError("E_CONFIG_INVALID", `the log limit ${name} must be an integer of at least 1, got ${value}`);
    }
  }
  if (!ALLOWED_REPLICAS.includes(config.replication.replicas)) {
    throw new JetfnError(
      "E_CONFIG_INVALID",
      `JETFN_REPLICAS must be one of ${ALLOWED_REPLICAS.join(", ")}, got ${config.replication.replicas}`,
    );
  }
  return Object.freeze(config);
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value.trim() === "" ? undefined : value.trim();
}

function list(value: string | undefined): string[] | undefined {
  const items = value
    ?.split(",")
    .map((item) => item.trim())
    .filter(Boolean);
  return items && items.length > 0 ? items : undefined;
}

/** An extra inbox prefix, ending with a dot; never a subject jetfn or the server acts on. */
function inboxPrefix(value: string): string {
  const prefix = value.endsWith(".") ? value : `${value}.`;
  const tokens = prefix.slice(0, -1).split(".");
  if (tokens.some((token) => token === "" || /[\s*>]/.test(token))) {
    throw new JetfnError("E_CONFIG_INVALID", `JETFN_INBOX_PREFIXES: "${value}" is not a subject prefix`);
  }
  // Answers sent there would reach the server's APIs ($JS, $KV, $SYS, ...) or jetfn's own subjects.
  if (prefix.startsWith("$") || prefix.startsWith("fn.") || prefix.startsWith("jetfn.")) {
    throw new JetfnError(
      "E_CONFIG_INVALID",
      `JETFN_INBOX_PREFIXES: "${value}" names server or jetfn subjects, not inboxes`,
    );
  }
  return prefix;
}

function duration(name: string, value: Duration): number {
  try {
    return parseDuration(value);
  } catch (error) {
    throw new JetfnError("E_CONFIG_INVALID", `${name}: ${(error as Error).message}`);
  }
}

function duplicateWindow(value: Duration): number {
  const ms = duration("duplicateWindow", value);
  if (ms < MIN_DUPLICATE_WINDOW_MS) {
    throw new JetfnError(
      "E_CONFIG_INVALID",
      `duplicateWindow must be at least 1m (a publish that went unconfirmed is asked again under the same id within it), got ${JSON.stringify(value)}`,
    );
  }
  return ms;
}

function positive(name: string, value: string | undefined): number | undefined {
  const parsed = integer(name, value);
  if (parsed !== undefined && parsed < 1)
    throw new JetfnError("E_CONFIG_INVALID", `${name} must be at least 1, got ${parsed}`);
  return parsed;
}

function integer(name: string, value: string | undefined): number | undefined {
  if (nonEmpty(value) === undefined) return undefined;
  const parsed = Number(value);
  if (!Number.isInteger(parsed)) throw new JetfnError("E_CONFIG_INVALID", `${name} must be an integer, got "${value}"`);
  return parsed;
}

/**
 * Variables a handler thread (`isolation: "thread"`) does not get: the database's and NATS's
 * addresses and credentials (a handler with them could write outside its transaction, unaudited
 * as any invocation, or reach the job streams), and jetfn's own settings and secrets (the dashboard
 * token, the NATS passwords). Everything else a thread gets as the runtime has it.
 */
const THREAD_WITHHELD = [/^DATABASE_URL$/, /^PG/, /^NATS_/, /^JETFN_/];

/** The environment of a handler thread: the runtime's, without what {@link THREAD_WITHHELD} names. */
export function handlerThreadEnvironment(env: NodeJS.ProcessEnv = process.env): Record<string, string> {
  const kept: Record<string, string> = {};
  for (const [name, value] of Object.entries(env)) {
    if (value !== undefined && !THREAD_WITHHELD.some((pattern) => pattern.test(name))) kept[name] = value;
  }
  return kept;
}

export const DEFAULT_TEST_ADMIN_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/postgres";

/** What `jetfn/testing` reads from the environment: where test databases are made, and the log level. */
export function resolveTestHarnessConfig(env: NodeJS.ProcessEnv = process.env): {
  adminDatabaseUrl: string;
  logLevel: string;
} {
  return {
    adminDatabaseUrl: nonEmpty(env.JETFN_TEST_DATABASE_URL) ?? DEFAULT_TEST_ADMIN_DATABASE_URL,
    logLevel: nonEmpty(env.LOG_LEVEL) ?? "warn",
  };
}

/** The nats-server executable jetfn starts (`dev`, `jetfn/testing`): `NATS_SERVER_BIN`, else from PATH. */
export function resolveNatsServerBinary(env: NodeJS.ProcessEnv = process.env): string {
  return nonEmpty(env.NATS_SERVER_BIN) ?? "nats-server";
}
