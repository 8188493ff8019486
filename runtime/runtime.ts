import { type JetStreamClient, type JetStreamManager, jetstream, jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection, Subscription } from "@nats-io/transport-node";
import type { Logger } from "pino";
import { type ResolvedConfig, type RuntimeOptions, resolveConfig } from "./config";
import { type AuditSealer, startAuditSealer } from "./audit-sealer";
import { ensureAuditCoverage } from "./db/audit-coverage";
import { assertDatabaseReachable, connectDatabase, type DatabaseClient } from "./db/client";
import { createSuccessRecorder, type SuccessRecorder } from "./db/invocation-store";
import { assertMigrated, migrate } from "./db/migrate";
import type { ResolvedFunction } from "./define-function";
import { createDeployer, type Deployer, type DeploymentChange } from "./deployer";
import { createEmitter, type RuntimeEmitter } from "./events";
import { type JobRunnerDependencies, runJob } from "./job-runner";
import { createLimiter, type Limiter } from "./limiter";
import { createLogger } from "./logger";
import { type CallServer, startCallServer } from "./nats/call-server";
import { connectNats } from "./nats/connection";
import { createJobPuller, type JobPuller } from "./nats/job-puller";
import { openProgressBoard } from "./nats/progress-board";
import { publishRequestedJobs } from "./nats/publish-job";
import { startStatusApi } from "./nats/status-api";
import { ensureFunctionConsumer, ensureJobStream } from "./nats/streams";
import { consumerName } from "./nats/subjects";
import type { Registry } from "./registry";
import { ackWaitFor } from "./retry-policy";

/** Options of startRuntime beyond the configuration itself. */
export interface StartRuntimeOptions extends RuntimeOptions {
  /** Use this logger instead of creating one. */
  logger?: Logger;
  /** Apply pending migrations at start (dev) instead of refusing to start (production). @default false */
  migrate?: boolean;
}

/** A running runtime: functions deployed, jobs pulled, calls answered. */
export interface Runtime {
  readonly config: ResolvedConfig;
  readonly logger: Logger;
  readonly events: RuntimeEmitter;
  readonly registry: Registry;
  readonly database: DatabaseClient;
  readonly nats: NatsConnection;
  /** Resolves once every file change seen so far is deployed. */
  settled(): Promise<void>;
  /** Graceful stop: no new work, in-flight work finishes (or is aborted after the grace period). */
  stop(): Promise<void>;
}

/** One deployed function's moving parts in this process. */
interface FunctionWorker {
  fn: ResolvedFunction;
  limiter: Limiter;
  puller: JobPuller;
}

/** Starts a runtime: connects, deploys the functions folder and begins serving. */
export async function startRuntime(options: StartRuntimeOptions = {}): Promise<Runtime> {
  const config = resolveConfig(options);
  const logger = options.logger ?? createLogger({ level: config.logLevel, format: config.logFormat });
  if (!config.databaseUrl) {
    throw new Error(
      "startRuntime needs a database URL; `jetfn dev` starts an embedded Postgres when DATABASE_URL is unset",
    );
  }
  const database = connectDatabase({ url: config.databaseUrl, poolSize: config.databasePoolSize });
  try {
    await assertDatabaseReachable(database);
    if (options.migrate) await migrate(database.sql);
    else await assertMigrated(database.sql);
  } catch (error) {
    await database.close();
    throw error;
  }
  let nc: NatsConnection;
  try {
    nc = await connectNats({ url: config.natsUrl, user: config.natsUser, password: config.natsPassword }, logger);
  } catch (error) {
    await database.close();
    throw error;
  }
  const runtime = new ServingRuntime(config, logger, database, nc);
  try {
    await runtime.start();
  } catch (error) {
    await runtime.stop();
    throw error;
  }
  return runtime;
}

class ServingRuntime implements Runtime {
  readonly config: ResolvedConfig;
  readonly logger: Logger;
  readonly events: RuntimeEmitter = createEmitter();
  readonly database: DatabaseClient;
  readonly nats: NatsConnection;
  readonly #stopping = new AbortController();
  readonly #aborting = new AbortController();
  readonly #workers = new Map<string, FunctionWorker>();
  readonly #retiring = new Set<Promise<void>>();
  readonly #js: JetStreamClient;
  readonly #deployer: Deployer;
  readonly #successes: SuccessRecorder;
  #manager: JetStreamManager | undefined;
  #jobDependencies: JobRunnerDependencies | undefined;
  #callServer: CallServer | undefined;
  #statusApi: Subscription | undefined;
  #stopped: Promise<void> | undefined;
  #sealer: AuditSealer | undefined;

  constructor(config: ResolvedConfig, logger: Logger, database: DatabaseClient, nats: NatsConnection) {
    this.config = config;
    this.logger = logger;
    this.database = database;
    this.nats = nats;
    this.#js = jetstream(nats);
    this.#successes = createSuccessRecorder(database.sql);
    this.#deployer = createDeployer({
      functionsDir: config.functionsDir,
      watch: config.watch,
      logger,
      events: this.events,
    });
  }

  get registry(): Registry {
    return this.#deployer.registry;
  }

  async start(): Promise<void> {
    const started = performance.now();
    this.#manager = await jetstreamManager(this.nats);
    await ensureJobStream(this.#manager, {
      name: this.config.streamName,
      retentionMs: this.config.jobRetentionMs,
      duplicateWindowMs: this.config.duplicateWindowMs,
    });
    const progress = await openProgressBoard(this.nats, this.logger);
    this.#jobDependencies = {
      database: this.database,
      successes: this.#successes,
      nc: this.nats,
      js: this.#js,
      progress,
      events: this.events,
      logger: this.logger,
      shutdownSignal: this.#aborting.signal,
    };
    await this.#coverAudit();
    this.#sealer = startAuditSealer(this.database.sql, this.logger);
    this.#deployer.onChange((change) => this.#applyDeployment(change));
    await this.#deployer.start();
    this.#callServer = startCallServer({
      nc: this.nats,
      queueGroup: this.config.queueGroup,
      lookup: (name) => this.#workers.get(name),
      invokeDependencies: { sql: this.database.sql, logger: this.logger, events: this.events },
      events: this.events,
      logger: this.logger,
      abortSignal: this.#aborting.signal,
      publishPendingJobs: (jobs, log) => publishRequestedJobs(this.#js, this.nats.info?.max_payload, jobs, log),
    });
    this.#statusApi = startStatusApi(this.nats, this.config.queueGroup, this.database, progress, this.logger);
    void this.#refreshPullersOnReconnect();
    this.logger.info(
      {
        functions: this.registry.names(),
        functionsDir: this.config.functionsDir,
        nats: this.config.natsUrl,
        startupMs: Math.round(performance.now() - started),
      },
      `Runtime ready with ${this.registry.size} function(s).`,
    );
  }

  settled(): Promise<void> {
    return this.#deployer.settled();
  }

  stop(): Promise<void> {
    this.#stopped ??= this.#shutdown();
    return this.#stopped;
  }

  async #applyDeployment(change: DeploymentChange): Promise<void> {
    // A deploy often comes with a new table; make sure it is audited before the code writes to it.
    if (change.added.length + change.updated.length > 0) await this.#coverAudit();
    for (const fn of change.added) await this.#deploy(fn);
    for (const { previous, next } of change.updated) await this.#redeploy(previous, next);
    for (const fn of change.removed) this.#undeploy(fn);
  }

  async #deploy(fn: ResolvedFunction): Promise<void> {
    if (this.#stopping.signal.aborted) return;
    await this.#ensureConsumer(fn);
    const limiter = createLimiter(fn.concurrency);
    const worker: FunctionWorker = {
      fn,
      limiter,
      puller: createJobPuller({
        js: this.#js,
        stream: this.config.streamName,
        consumer: consumerName(fn.name),
        fn: fn.name,
        // Twice the concurrency: the next jobs are already here when a slot frees up.
        window: () => worker.limiter.capacity * 2,
        heartbeatMs: () => Math.floor(ackWaitFor(worker.fn.timeoutMs, this.config.maxAckWaitMs) / 3),
        handle: (message) => runJob(this.#jobDependencies as JobRunnerDependencies, worker.fn, worker.limiter, message),
        recover: () => this.#ensureConsumer(worker.fn),
        logger: this.logger,
      }),
    };
    this.#workers.set(fn.name, worker);
    worker.puller.start();
    this.logger.info({ fn: fn.name, file: fn.file, version: fn.version }, `Deployed ${fn.name}.`);
  }

  async #redeploy(previous: ResolvedFunction, next: ResolvedFunction): Promise<void> {
    const worker = this.#workers.get(next.name);
    if (!worker) return this.#deploy(next);
    worker.fn = next;
    worker.limiter.capacity = next.concurrency;
    if (
      previous.timeoutMs !== next.timeoutMs ||
      previous.retry !== next.retry ||
      previous.description !== next.description
    ) {
      await this.#ensureConsumer(next);
    }
    this.logger.info(
      { fn: next.name, version: next.version, previousVersion: previous.version },
      `Redeployed ${next.name}.`,
    );
  }

  #undeploy(fn: ResolvedFunction): void {
    const worker = this.#workers.get(fn.name);
    if (!worker) return;
    this.#workers.delete(fn.name);
    // Jobs already held finish on the old code; queued ones wait in the stream for the function to return.
    const retiring = worker.puller.stop();
    this.#retiring.add(retiring);
    void retiring.finally(() => this.#retiring.delete(retiring));
    this.logger.info({ fn: fn.name, file: fn.file }, `Undeployed ${fn.name}; its queued jobs wait for it to return.`);
  }

  /** Attaches the audit triggers to tables that lack them (where no event trigger does it). */
  async #coverAudit(): Promise<void> {
    try {
      const attached = await ensureAuditCoverage(this.database.sql, this.config.auditSchemas);
      if (attached > 0)
        this.logger.info({ attached, schemas: this.config.auditSchemas }, "Audit triggers attached to new tables.");
    } catch (error) {
      this.logger.error({ err: error }, "Could not attach audit triggers; run `npx jetfn audit --check`.");
    }
  }

  async #ensureConsumer(fn: ResolvedFunction): Promise<void> {
    try {
      await ensureFunctionConsumer(
        this.#manager as JetStreamManager,
        this.config.streamName,
        fn,
        this.config.maxAckWaitMs,
      );
    } catch (error) {
      this.logger.error(
        { err: error, fn: fn.name },
        "Could not create or update the function's consumer; retrying while pulling.",
      );
    }
  }

  /** After a reconnect the server may have forgotten pending pull requests; ask again. */
  async #refreshPullersOnReconnect(): Promise<void> {
    for await (const status of this.nats.status()) {
      if (status.type === "reconnect") for (const worker of this.#workers.values()) worker.puller.refresh();
    }
  }

  async #shutdown(): Promise<void> {
    const started = performance.now();
    this.#stopping.abort();
    this.logger.info({ graceMs: this.config.shutdownGraceMs }, "Shutting down: finishing in-flight work.");
    const abortTimer = setTimeout(() => {
      this.logger.warn("Grace period over; aborting invocations still running (their jobs will be delivered again).");
      this.#aborting.abort();
    }, this.config.shutdownGraceMs);
    await this.#deployer
      .close()
      .catch((error: unknown) => this.logger.warn({ err: error }, "Closing the watcher failed."));
    await Promise.allSettled([
      this.#callServer?.close(),
      ...[...this.#workers.values()].map((worker) => worker.puller.stop()),
      ...this.#retiring,
    ]);
    clearTimeout(abortTimer);
    await this.#successes
      .flush()
      .catch((error: unknown) => this.logger.error({ err: error }, "Writing final records failed."));
    this.#statusApi?.unsubscribe();
    await this.#sealer?.close();
    await this.nats.drain().catch((error: unknown) => this.logger.warn({ err: error }, "Draining NATS failed."));
    await this.database.close().catch((error: unknown) => this.logger.warn({ err: error }, "Closing Postgres failed."));
    this.logger.info({ durationMs: Math.round(performance.now() - started) }, "Runtime stopped.");
  }
}
