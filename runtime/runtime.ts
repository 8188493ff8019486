import { setMaxListeners } from "node:events";
import {
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
  jetstream,
  jetstreamManager,
} from "@nats-io/jetstream";
import type { NatsConnection, Subscription } from "@nats-io/transport-node";
import type { Logger } from "pino";
import { createAuditAnchorer } from "./audit/audit-anchorer";
import { type AuditSealer, startAuditSealer } from "./audit/audit-sealer";
import { type ResolvedConfig, type RuntimeOptions, resolveConfig } from "./config";
import { createDatabaseBinder, type DatabaseBinder } from "./db/app-database";
import { ensureAuditCoverage } from "./db/audit-coverage";
import { assertDatabaseReachable, connectDatabase, type DatabaseClient } from "./db/client";
import { type CommitGroups, createCommitGroups } from "./db/commit-groups";
import { createSuccessRecorder, type SuccessRecorder } from "./db/invocation-store";
import { assertMigrated, migrate } from "./db/migrate";
import type { OutboxLag } from "./db/outbox";
import { type LoadedAppSchema, loadAppSchema } from "./deploy/app-schema";
import { createDeployer, type Deployer, type DeploymentChange } from "./deploy/deployer";
import type { Registry } from "./deploy/registry";
import { admitDebouncedJob } from "./flow/debounce";
import { debounceDependencies, type EnqueueApiOptions, startEnqueueApi } from "./flow/enqueue-api";
import { type FlowControl, openFlowControl } from "./flow/flow-control";
import { describeFlow } from "./flow/flow-options";
import { JOB_KEYS_BUCKET, openJobKeys } from "./flow/job-keys";
import { ensurePriorityConsumers, type PriorityPullers, startPriorityPullers } from "./flow/priority-pullers";
import { waitingJobFinder } from "./flow/waiting-jobs";
import { type OpsEndpoint, startOpsEndpoint } from "./http/ops-endpoint";
import type { RuntimePhase } from "./http/readiness";
import { CANCEL_BUCKET, type Cancellations, openCancellations } from "./invocation/cancellation";
import { type InvocationStats, trackInvocationStats } from "./invocation/invocation-stats";
import { jobIdentity } from "./invocation/job-identity";
import { type JobRunnerDependencies, keepJobAlive, runJob } from "./invocation/job-runner";
import { createLimiter, type Limiter } from "./invocation/limiter";
import { ackWaitFor } from "./invocation/retry-policy";
import { createIsolation, type Isolation } from "./isolation/isolation";
import { AUDIT_ANCHOR_STREAM, ensureAuditAnchorStream } from "./nats/audit-anchor-stream";
import { type CallServer, startCallServer } from "./nats/call-server";
import { startCancelApi } from "./nats/cancel-api";
import { connectNats } from "./nats/connection";
import {
  type ConsumerDefinitions,
  DEFINITIONS_BUCKET,
  openConsumerDefinitions,
  type SettledDefinition,
} from "./nats/consumer-definitions";
import {
  type DelayedJobMover,
  delayedStreamName,
  ensureDelayedJobs,
  findScheduledJob,
  removeScheduledJob,
  startDelayedJobMover,
} from "./nats/delayed-jobs";
import { type EventListener, startEventListener } from "./nats/event-listener";
import { EVENT_STREAM, ensureEventStream } from "./nats/event-stream";
import { createJobPuller, type JobPuller } from "./nats/job-puller";
import { openProgressBoard } from "./nats/progress-board";
import { createQueueDepthReader } from "./nats/queue-depth";
import { createReplyGuard } from "./nats/reply-guard";
import { startStatusApi } from "./nats/status-api";
import { StreamPublisher } from "./nats/stream-publisher";
import { scaleUpStreams } from "./nats/stream-replicas";
import { ensureFunctionConsumer, ensureJobStream } from "./nats/streams";
import { consumerName, PROGRESS_BUCKET } from "./nats/subjects";
import { type Operations, startOperations } from "./operations";
import { type OutboxRelay, startOutboxRelay } from "./outbox/outbox-relay";
import type { ResolvedFunction } from "./sdk/define-function";
import { type Duration, parseDuration } from "./support/duration";
import { JetfnError } from "./support/errors";
import { createLogger, redactUrls } from "./support/logger";
import { type RejectionWatch, watchUnhandledRejections } from "./support/unhandled-rejections";
import { createEmitter, type RuntimeEmitter } from "./triggers/events";
import { SCHEDULE_BUCKET, type Scheduler, type ScheduleView, startScheduler } from "./triggers/scheduler";

/** Options of startRuntime beyond the configuration itself. */
export interface StartRuntimeOptions extends RuntimeOptions {
  /** Use this logger instead of creating one. */
  logger?: Logger;
  /** Emit on this emitter instead of creating one (to listen from before the first job runs). */
  events?: RuntimeEmitter;
  /** Apply pending migrations at start (dev) instead of refusing to start (production). @default false */
  migrate?: boolean;
  /** How often consumers are checked for stalls and the stream for jobs no function can take. @default "15s" */
  healthCheckInterval?: Duration;
  /** Warn at start when the NATS server or the stream falls short of production settings. @default true */
  productionChecks?: boolean;
}

/** A running runtime: functions deployed, jobs pulled, calls answered. */
export interface Runtime {
  readonly config: ResolvedConfig;
  readonly logger: Logger;
  readonly events: RuntimeEmitter;
  readonly registry: Registry;
  readonly database: DatabaseClient;
  readonly nats: NatsConnection;
  /** Calls and jobs this process served, per function (what `$SRV.STATS`, metrics and the dashboard show). */
  readonly stats: InvocationStats;
  /** Resolves once every file change seen so far is deployed. */
  settled(): Promise<void>;
  /** Scheduled functions with their next due time as this runtime planned it (for `jetfn ls`). */
  schedules(): ScheduleView[];
  /** How far the outbox relay is behind: unpublished rows and the oldest one's age (for `jetfn ls`). */
  outboxLag(): Promise<OutboxLag>;
  /** Graceful stop: no new work, in-flight work finishes (or is aborted after the grace period). */
  stop(): Promise<void>;
}

/** One deployed function's moving parts in this process. */
interface FunctionWorker {
  fn: ResolvedFunction;
  limiter: Limiter;
  puller: JobPuller;
  /** Pullers of its priority levels (flow/priority-pullers.ts). */
  priority?: PriorityPullers;
  /** Set while the function listens to events (`on`). */
  listener?: EventListener;
  /**
   * The ack wait of the consumer's settings in force (ms): a newer definition run by other runtimes
   * may have set a shorter one than this runtime's, and held jobs must be kept alive within it.
   */
  consumerAckWaitMs: number;
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
  let schema: LoadedAppSchema | undefined;
  try {
    await assertDatabaseReachable(database);
    const sources = { appDirectory: config.migrationsDir };
    if (options.migrate) await migrate(database.sql, sources);
    else await assertMigrated(database.sql, sources);
    schema = await loadAppSchema(config.schemaFile, config.loadTimeoutMs);
  } catch (error) {
    await database.close();
    throw error;
  }
  let nc: NatsConnection;
  try {
    nc = await connectNats({ url: config.natsUrl, auth: config.natsAuth }, logger);
  } catch (error) {
    await database.close();
    throw error;
  }
  const runtime = new ServingRuntime(config, logger, database, nc, options.events, schema);
  runtime.healthCheckMs = parseDuration(options.healthCheckInterval ?? DEFAULT_HEALTH_CHECK_INTERVAL);
  runtime.productionChecks = options.productionChecks ?? true;
  try {
    await runtime.start();
  } catch (error) {
    await runtime.stop();
    throw error;
  }
  return runtime;
}

/** How often consumers and the stream are checked (stalls, jobs for invalid names). */
export const DEFAULT_HEALTH_CHECK_INTERVAL: Duration = "15s";

class ServingRuntime implements Runtime {
  readonly config: ResolvedConfig;
  readonly logger: Logger;
  readonly events: RuntimeEmitter;
  readonly stats: InvocationStats;
  readonly database: DatabaseClient;
  readonly nats: NatsConnection;
  readonly #stopping = new AbortController();
  readonly #aborting = new AbortController();
  readonly #workers = new Map<string, FunctionWorker>();
  readonly #retiring = new Set<Promise<void>>();
  readonly #js: JetStreamClient;
  readonly #deployer: Deployer;
  readonly #successes: SuccessRecorder;
  readonly #commitGroups: CommitGroups;
  /** Publishes committed jobs and events (outbox) and scheduled jobs. */
  readonly #publisher: StreamPublisher;
  readonly #isolation: Isolation;
  /** Makes each invocation's `ctx.db`, typed and relational with the app's drizzle schema. */
  readonly #bindDatabase: DatabaseBinder;
  #manager: JetStreamManager | undefined;
  #jobDependencies: JobRunnerDependencies | undefined;
  #callServer: CallServer | undefined;
  #statusApi: Subscription | undefined;
  #delayedJobs: DelayedJobMover | undefined;
  #cancelApi: Subscription | undefined;
  #enqueueApi: Subscription | undefined;
  #cancellations: Cancellations | undefined;
  #definitions: ConsumerDefinitions | undefined;
  /** Opened when the first function with a concurrency or rate limit is deployed. */
  #flow: Promise<FlowControl> | undefined;
  #stopped: Promise<void> | undefined;
  #sealer: AuditSealer | undefined;
  #outbox: OutboxRelay | undefined;
  #scheduler: Scheduler | undefined;
  #rejections: RejectionWatch | undefined;
  #operations: Operations | undefined;
  /** `/metrics`, `/livez`, `/readyz`: up from the start of start() to the end of the shutdown. */
  #opsEndpoint: OpsEndpoint | undefined;
  #serving = false;
  healthCheckMs = parseDuration(DEFAULT_HEALTH_CHECK_INTERVAL);
  productionChecks = true;

  constructor(
    config: ResolvedConfig,
    logger: Logger,
    database: DatabaseClient,
    nats: NatsConnection,
    events: RuntimeEmitter = createEmitter(),
    schema?: LoadedAppSchema,
  ) {
    this.events = events;
    this.stats = trackInvocationStats(events);
    // Every invocation in flight listens to the abort signal; hundreds at once are expected.
    setMaxListeners(0, this.#aborting.signal);
    this.config = config;
    this.logger = logger;
    this.database = database;
    this.nats = nats;
    this.#js = jetstream(nats);
    this.#publisher = new StreamPublisher(nats);
    this.#successes = createSuccessRecorder(database.sql);
    this.#commitGroups = createCommitGroups(database.sql, { lanes: commitLanes(config.databasePoolSize) });
    this.#bindDatabase = createDatabaseBinder(schema?.exports);
    this.#isolation = createIsolation({
      logger,
      logLimits: config.logLimits,
      loadTimeoutMs: config.loadTimeoutMs,
      schema: schema && { file: schema.file, source: schema.source },
    });
    this.#deployer = createDeployer({
      functionsDir: config.functionsDir,
      watch: config.watch,
      loadTimeoutMs: config.loadTimeoutMs,
      logger,
      events: this.events,
    });
  }

  get registry(): Registry {
    return this.#deployer.registry;
  }

  async start(): Promise<void> {
    const started = performance.now();
    this.#manager = await jetstreamManager(this.nats).catch((error: unknown) => {
      throw new JetfnError(
        "E_UNAVAILABLE",
        `the NATS server at ${redactUrls(this.config.natsUrl)} does not offer JetStream (${(error as Error).message}); start it with -js, or jetstream {} in its config`,
        { cause: error },
      );
    });
    await this.#startOpsEndpoint(this.#manager);
    await ensureJobStream(this.#manager, {
      name: this.config.streamName,
      retentionMs: this.config.jobRetentionMs,
      duplicateWindowMs: this.config.duplicateWindowMs,
      replication: this.config.replication,
    });
    await ensureEventStream(this.#manager, {
      name: EVENT_STREAM,
      retentionMs: this.config.jobRetentionMs,
      duplicateWindowMs: this.config.duplicateWindowMs,
      replication: this.config.replication,
    });
    const delayedStream = await ensureDelayedJobs(this.#manager, this.config.streamName, this.config.replication);
    const progress = await openProgressBoard(this.nats, this.logger, this.config.replication);
    const cancellations = await openCancellations(this.nats, this.logger, this.config.replication);
    this.#definitions = await openConsumerDefinitions(this.nats, this.logger, this.config.replication);
    this.#cancellations = cancellations;
    const jobKeys = await openJobKeys(this.nats, this.config.replication);
    const keyedEnqueue: Omit<EnqueueApiOptions, "replyGuard"> = {
      nc: this.nats,
      queueGroup: this.config.queueGroup,
      database: this.database,
      keys: jobKeys,
      publisher: this.#publisher,
      manager: this.#manager,
      delayedStream,
      logger: this.logger,
    };
    this.#outbox = await startOutboxRelay({
      sql: this.database.sql,
      js: this.#publisher,
      events: this.events,
      logger: this.logger,
      maxPayload: this.nats.info?.max_payload,
    });
    this.#scheduler = await startScheduler({
      nc: this.nats,
      js: this.#publisher,
      events: this.events,
      logger: this.logger,
      replication: this.config.replication,
    });
    this.#delayedJobs = startDelayedJobMover({
      js: this.#js,
      publisher: this.#publisher,
      stream: delayedStream,
      logger: this.logger,
      dropped: (id) => cancellations.cancelled(id) !== undefined,
      admitDebounced: (job) => admitDebouncedJob(debounceDependencies(keyedEnqueue), job),
    });
    this.#jobDependencies = {
      database: this.database,
      successes: this.#successes,
      commitGroups: this.#commitGroups,
      nc: this.nats,
      js: this.#js,
      progress,
      events: this.events,
      logger: this.logger,
      shutdownSignal: this.#aborting.signal,
      outbox: this.#outbox,
      outage: { waiting: 0 },
      logLimits: this.config.logLimits,
      cancellations,
      bindDatabase: this.#bindDatabase,
    };
    await this.#coverAudit();
    // Seals are anchored outside the database, where whoever controls it cannot rewrite them.
    await ensureAuditAnchorStream(this.#manager, this.config.replication);
    await scaleUpStreams(this.#manager, this.#streamNames(), this.config.replication, this.logger);
    const anchorer = createAuditAnchorer({
      sql: this.database.sql,
      js: this.#js,
      manager: this.#manager,
      logger: this.logger,
    });
    this.#sealer = startAuditSealer(this.database.sql, this.logger, { anchorer });
    this.#deployer.onChange((change) => this.#applyDeployment(change));
    await this.#deployer.start();
    const replyGuard = createReplyGuard({
      prefixes: this.config.inboxPrefixes,
      events: this.events,
      logger: this.logger,
    });
    this.#callServer = startCallServer({
      nc: this.nats,
      queueGroup: this.config.queueGroup,
      lookup: (name) => this.#workers.get(name),
      invokeDependencies: {
        sql: this.database.sql,
        logger: this.logger,
        events: this.events,
        maxPayload: this.nats.info?.max_payload,
        logLimits: this.config.logLimits,
        bindDatabase: this.#bindDatabase,
      },
      events: this.events,
      logger: this.logger,
      replyGuard,
      abortSignal: this.#aborting.signal,
      publishPendingJobs: (messages, log) => (this.#outbox as OutboxRelay).publishCommitted(messages, log),
    });
    this.#statusApi = startStatusApi(
      this.nats,
      this.config.queueGroup,
      this.database,
      progress,
      this.logger,
      replyGuard,
      (id) => findScheduledJob(this.#manager as JetStreamManager, delayedStream, id),
      (id) => cancellations.cancelled(id),
      waitingJobFinder(this.nats),
    );
    this.#cancelApi = startCancelApi({
      nc: this.nats,
      queueGroup: this.config.queueGroup,
      database: this.database,
      progress,
      cancellations,
      scheduled: {
        find: (id) => findScheduledJob(this.#manager as JetStreamManager, delayedStream, id),
        remove: (job) => removeScheduledJob(this.#manager as JetStreamManager, delayedStream, job),
      },
      logger: this.logger,
      replyGuard,
    });
    this.#enqueueApi = startEnqueueApi({ ...keyedEnqueue, replyGuard });
    this.#rejections = watchUnhandledRejections(this.logger);
    this.#operations = await startOperations({
      config: this.config,
      nats: this.nats,
      js: this.#js,
      manager: this.#manager,
      database: this.database,
      events: this.events,
      logger: this.logger,
      stats: this.stats,
      functions: () => [...this.#workers.keys()],
      limits: (name) => describeFlow(this.#workers.get(name)?.fn.flow),
      pullers: () =>
        [...this.#workers.values()].map((worker) => ({
          fn: worker.fn.name,
          held: worker.puller.held,
          window: worker.puller.window,
          refresh: () => worker.puller.refresh(),
          recover: () => this.#ensureWorkerConsumer(worker),
        })),
      outboxLag: () => this.outboxLag(),
      productionChecks: this.productionChecks,
      healthCheckMs: this.healthCheckMs,
      replyGuard,
    });
    void this.#followNatsStatus();
    // Ready means serving: the server has every subscription (calls, status, discovery) once a
    // round trip made after them comes back, so a caller starting now is not told "no responders".
    await this.nats.flush();
    this.#serving = true;
    this.logger.info(
      {
        functions: this.registry.names(),
        functionsDir: this.config.functionsDir,
        nats: redactUrls(this.config.natsUrl),
        startupMs: Math.round(performance.now() - started),
      },
      `Runtime ready with ${this.registry.size} function(s).`,
    );
  }

  /** Serves metrics and health checks when a metrics port is set; readiness follows #phase. */
  async #startOpsEndpoint(manager: JetStreamManager): Promise<void> {
    if (this.config.metricsPort === undefined) return;
    this.#opsEndpoint = await startOpsEndpoint({
      host: this.config.metricsHost,
      port: this.config.metricsPort,
      databaseUrl: this.config.databaseUrl as string,
      nats: this.nats,
      events: this.events,
      stats: this.stats,
      queueDepth: createQueueDepthReader(manager, this.config.streamName),
      logger: this.logger,
      undeployed: () => this.registry.names().filter((name) => !this.#workers.has(name)),
      phase: () => this.#phase(),
    });
  }

  #phase(): RuntimePhase {
    if (this.#stopping.signal.aborted) return "stopping";
    return this.#serving ? "serving" : "starting";
  }

  /** Every stream jetfn created above, buckets as their `KV_<bucket>` streams. */
  #streamNames(): string[] {
    return [
      this.config.streamName,
      delayedStreamName(this.config.streamName),
      EVENT_STREAM,
      `KV_${PROGRESS_BUCKET}`,
      `KV_${CANCEL_BUCKET}`,
      `KV_${DEFINITIONS_BUCKET}`,
      `KV_${JOB_KEYS_BUCKET}`,
      `KV_${SCHEDULE_BUCKET}`,
      AUDIT_ANCHOR_STREAM,
    ];
  }

  settled(): Promise<void> {
    return this.#deployer.settled();
  }

  schedules(): ScheduleView[] {
    return this.#scheduler?.list() ?? [];
  }

  outboxLag(): Promise<OutboxLag> {
    return (this.#outbox as OutboxRelay).lag();
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

  async #deploy(deployed: ResolvedFunction): Promise<void> {
    if (this.#stopping.signal.aborted) return;
    const settled = await this.#ensureConsumer(deployed);
    await this.#flowFor(deployed);
    // An isolated function's handler is replaced by one that runs it in a worker thread.
    const fn = this.#isolation.prepare(deployed);
    const limiter = createLimiter(fn.concurrency);
    const pulling = {
      js: this.#js,
      stream: this.config.streamName,
      fn: fn.name,
      concurrency: () => worker.limiter.capacity,
      heartbeatMs: () =>
        Math.floor(Math.min(ackWaitFor(worker.fn.timeoutMs, this.config.maxAckWaitMs), worker.consumerAckWaitMs) / 3),
      keepAlive: (heldForMs: number) =>
        keepJobAlive(worker.fn.timeoutMs, (this.#jobDependencies as JobRunnerDependencies).outage, heldForMs),
      recover: () => this.#ensureWorkerConsumer(worker),
      logger: this.logger,
    };
    const handleWith =
      (jobLimiter: Limiter) =>
      (message: JsMsg, handlerDone: (handlerMs?: number) => void): Promise<void> =>
        runJob(
          this.#jobDependencies as JobRunnerDependencies,
          worker.fn,
          jobLimiter,
          message,
          jobIdentity,
          handlerDone,
        );
    const worker: FunctionWorker = {
      fn,
      limiter,
      consumerAckWaitMs: settled ? settled.settings.ack_wait / 1_000_000 : Number.POSITIVE_INFINITY,
      puller: createJobPuller({ ...pulling, consumer: consumerName(fn.name), handle: handleWith(limiter) }),
    };
    this.#workers.set(fn.name, worker);
    worker.puller.start();
    worker.priority = startPriorityPullers(pulling, () => worker.limiter, handleWith, {
      nc: this.nats,
      manager: this.#manager as JetStreamManager,
      stream: this.config.streamName,
    });
    if (fn.listen) worker.listener = await this.#listen(worker);
    this.#scheduler?.set(fn);
    this.logger.info({ fn: fn.name, file: fn.file, version: fn.version }, `Deployed ${fn.name}.`);
  }

  async #redeploy(previous: ResolvedFunction, next: ResolvedFunction): Promise<void> {
    const worker = this.#workers.get(next.name);
    if (!worker) return this.#deploy(next);
    // Invocations in flight keep the version (and the worker threads) they started on.
    this.#isolation.retire(worker.fn);
    worker.fn = this.#isolation.prepare(next);
    worker.limiter.capacity = next.concurrency;
    await this.#flowFor(next);
    if (
      previous.timeoutMs !== next.timeoutMs ||
      previous.retry !== next.retry ||
      previous.description !== next.description
    ) {
      await this.#ensureWorkerConsumer(worker);
    }
    await this.#relisten(worker, previous);
    this.#scheduler?.set(next);
    this.logger.info(
      { fn: next.name, version: next.version, previousVersion: previous.version },
      `Redeployed ${next.name}.`,
    );
  }

  /** Opens flow control for the first function with limits, and tells it which functions have them. */
  async #flowFor(fn: ResolvedFunction): Promise<void> {
    if (!fn.flow && !this.#flow) return;
    this.#flow ??= openFlowControl({
      nc: this.nats,
      manager: this.#manager as JetStreamManager,
      publisher: this.#publisher,
      jobStream: this.config.streamName,
      logger: this.logger,
      replication: this.config.replication,
      secret: (this.#scheduler as Scheduler).secret,
    });
    const flow = await this.#flow;
    (this.#jobDependencies as JobRunnerDependencies).flow = flow;
    flow.deployed(fn, fn.name);
  }

  #undeploy(fn: ResolvedFunction): void {
    const worker = this.#workers.get(fn.name);
    if (!worker) return;
    this.#workers.delete(fn.name);
    this.#isolation.retire(worker.fn);
    this.#scheduler?.remove(fn.name);
    void this.#flow?.then((flow) => flow.deployed(undefined, fn.name));
    // Jobs already held finish on the old code; queued ones wait in the stream for the function to return.
    const retiring = Promise.all([worker.puller.stop(), worker.priority?.stop(), worker.listener?.stop()]).then(
      () => undefined,
    );
    this.#retiring.add(retiring);
    void retiring.finally(() => this.#retiring.delete(retiring));
    this.logger.info({ fn: fn.name, file: fn.file }, `Undeployed ${fn.name}; its queued jobs wait for it to return.`);
  }

  #listen(worker: FunctionWorker): Promise<EventListener> {
    return startEventListener({
      js: this.#js,
      manager: this.#manager as JetStreamManager,
      stream: EVENT_STREAM,
      maxAckWaitMs: this.config.maxAckWaitMs,
      definitions: this.#definitions as ConsumerDefinitions,
      worker,
      dependencies: () => this.#jobDependencies as JobRunnerDependencies,
      logger: this.logger,
    });
  }

  /** Follows a redeploy's `on`: start, update or stop listening. */
  async #relisten(worker: FunctionWorker, previous: ResolvedFunction): Promise<void> {
    const next = worker.fn;
    if (!next.listen) {
      const listener = worker.listener;
      worker.listener = undefined;
      await listener?.remove();
      return;
    }
    if (!worker.listener) worker.listener = await this.#listen(worker);
    else if (
      previous.listen?.pattern !== next.listen.pattern ||
      previous.timeoutMs !== next.timeoutMs ||
      previous.retry !== next.retry
    ) {
      await worker.listener.update();
    }
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

  /** Creates or updates a function's consumer with the newest definition; undefined if that failed. */
  async #ensureConsumer(fn: ResolvedFunction): Promise<SettledDefinition | undefined> {
    try {
      const settled = await ensureFunctionConsumer(
        this.#manager as JetStreamManager,
        this.config.streamName,
        fn,
        this.config.maxAckWaitMs,
        this.#definitions as ConsumerDefinitions,
      );
      // The priority levels' consumers follow the settings in force, the newest definition's.
      await ensurePriorityConsumers(
        this.#manager as JetStreamManager,
        this.config.streamName,
        fn.name,
        settled.settings,
      );
      return settled;
    } catch (error) {
      this.logger.error(
        { err: error, fn: fn.name },
        "Could not create or update the function's consumer; retrying while pulling.",
      );
      return undefined;
    }
  }

  /** #ensureConsumer for a deployed function, remembering the ack wait in force. */
  async #ensureWorkerConsumer(worker: FunctionWorker): Promise<void> {
    const settled = await this.#ensureConsumer(worker.fn);
    if (settled) worker.consumerAckWaitMs = settled.settings.ack_wait / 1_000_000;
  }

  /**
   * Announces disconnects and reconnects (metrics count them). After a reconnect the server may have
   * forgotten pending pull requests; ask again.
   */
  async #followNatsStatus(): Promise<void> {
    for await (const status of this.nats.status()) {
      if (status.type === "disconnect") this.events.emit("nats:disconnected", { server: status.server });
      if (status.type !== "reconnect") continue;
      this.events.emit("nats:reconnected", { server: status.server });
      for (const worker of this.#workers.values()) {
        worker.puller.refresh();
        worker.priority?.refresh();
      }
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
    await this.#scheduler?.close();
    await Promise.allSettled([
      this.#callServer?.close(),
      ...[...this.#workers.values()].flatMap((worker) => [
        worker.puller.stop(),
        worker.priority?.stop(),
        worker.listener?.stop(),
      ]),
      ...this.#retiring,
    ]);
    clearTimeout(abortTimer);
    await this.#flow?.then((flow) => flow.close()).catch(() => undefined);
    await this.#isolation.close();
    await this.#successes
      .flush()
      .catch((error: unknown) => this.logger.error({ err: error }, "Writing final records failed."));
    await this.#commitGroups.close();
    await this.#operations?.close();
    // After the last invocation: whatever it committed to the outbox is published or left for a sweep.
    await this.#outbox
      ?.close()
      .catch((error: unknown) => this.logger.warn({ err: error }, "Closing the relay failed."));
    this.#statusApi?.unsubscribe();
    this.#cancelApi?.unsubscribe();
    this.#enqueueApi?.unsubscribe();
    await this.#delayedJobs?.stop();
    await this.#cancellations?.close();
    await this.#sealer?.close();
    this.#publisher.close();
    await this.nats.drain().catch((error: unknown) => this.logger.warn({ err: error }, "Draining NATS failed."));
    await this.database.close().catch((error: unknown) => this.logger.warn({ err: error }, "Closing Postgres failed."));
    // Last, so probes and scrapes see the whole drain (readiness says "shutting down").
    await this.#opsEndpoint
      ?.close()
      .catch((error: unknown) => this.logger.warn({ err: error }, "Closing the metrics and health endpoint failed."));
    this.#rejections?.close();
    this.stats.close();
    this.logger.info({ durationMs: Math.round(performance.now() - started) }, "Runtime stopped.");
  }
}

/**
 * Connections that carry jobs' shared transactions: two fifths of the pool (at most 8), leaving the
 * rest for calls, records, the outbox and the sealer. Insert drains at concurrency 8 ran 2-10%
 * faster on 8 lanes than on 4 (side by side), and slower on 12 (smaller groups, more COMMITs).
 */
export function commitLanes(poolSize: number): number {
  return Math.max(1, Math.min(8, Math.floor((poolSize * 2) / 5)));
}
