import { setMaxListeners } from "node:events";
import type { JsMsg } from "@nats-io/jetstream";
import type { NatsConnection, Subscription } from "@nats-io/transport-node";
import type { Logger } from "pino";
import { type ResolvedConfig, type RuntimeOptions, resolveConfig } from "./config";
import { createDatabaseBinder, type DatabaseBinder } from "./db/app-database";
import { ensureAuditCoverage } from "./db/audit-coverage";
import { assertDatabaseReachable, connectDatabase, type DatabaseClient } from "./db/client";
import { type CommitGroups, createCommitGroups } from "./db/commit-groups";
import { createSuccessRecorder, type SuccessRecorder } from "./db/invocation-store";
import { assertMigrated, MIGRATION_WAITS, migrate } from "./db/migrate";
import type { OutboxLag } from "./db/outbox";
import { type LoadedAppSchema, loadAppSchema } from "./deploy/app-schema";
import { createDeployer, type Deployer, type DeploymentChange } from "./deploy/deployer";
import type { Registry } from "./deploy/registry";
import { startEnqueueApi } from "./flow/enqueue-api";
import { createFlowControl, type FlowControl } from "./flow/flow-control";
import { describeFlow } from "./flow/flow-options";
import { createPriorityBacklog, type PriorityBacklog } from "./flow/priority-backlog";
import { ensurePriorityConsumer, updatePriorityConsumers } from "./flow/priority-consumers";
import { type PriorityPullers, startPriorityPullers } from "./flow/priority-pullers";
import { waitingJobFinder } from "./flow/waiting-jobs";
import { type OpsEndpoint, startOpsEndpoint } from "./http/ops-endpoint";
import type { RuntimePhase } from "./http/readiness";
import { keepJobAlive } from "./invocation/database-outage";
import { type InvocationStats, trackInvocationStats } from "./invocation/invocation-stats";
import { jobIdentity } from "./invocation/job-identity";
import { type JobRunnerDependencies, runJob } from "./invocation/job-runner";
import { createLimiter, type Limiter } from "./invocation/limiter";
import { ackWaitFor } from "./invocation/retry-policy";
import { createIsolation, type Isolation } from "./isolation/isolation";
import { type CallServer, startCallServer } from "./nats/call-server";
import { startCancelApi } from "./nats/cancel-api";
import { connectNats } from "./nats/connection";
import type { SettledDefinition } from "./nats/consumer-definitions";
import { findScheduledJob, removeScheduledJob } from "./nats/delayed-jobs";
import { type EventListener, startEventListener } from "./nats/event-listener";
import { EVENT_STREAM, listenerConsumerName, withdrawListenerConsumer } from "./nats/event-stream";
import { createJobPuller, type JobPuller } from "./nats/job-puller";
import { createQueueDepthReader } from "./nats/queue-depth";
import { createReplyGuard } from "./nats/reply-guard";
import { startStatusApi } from "./nats/status-api";
import { ensureFunctionConsumer } from "./nats/streams";
import { consumerName } from "./nats/subjects";
import { DEFAULT_ANSWER_WAIT_MS, untilAnswered } from "./nats/until-answered";
import { type Operations, startOperations } from "./operations";
import { openRuntimeParts, type RuntimeBase, type RuntimeParts } from "./runtime-parts";
import type { ResolvedFunction } from "./sdk/define-function";
import { type Duration, parseDuration } from "./support/duration";
import { createLogger, redactUrls } from "./support/logger";
import { type RejectionWatch, watchUnhandledRejections } from "./support/unhandled-rejections";
import { EventWaiters } from "./triggers/event-waiters";
import { createEmitter, type RuntimeEmitter } from "./triggers/events";
import type { ScheduleView } from "./triggers/scheduler";

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
  /**
   * Stops the runtime when aborted. During the start, the step under way ends at its next request
   * or retry, what was started so far is stopped, and startRuntime rejects with the signal's reason;
   * after it, like stop().
   */
  signal?: AbortSignal;
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

/** How #ensureConsumer makes a function's consumer. */
interface ConsumerEnsuring {
  /** Also the consumer of this priority level. */
  level?: number;
  /** Ask again while NATS does not answer in time (deploys; see nats/until-answered.ts). @default false */
  untilAnswered?: boolean;
}

/** Starts a runtime: connects, deploys the functions folder and begins serving. */
export async function startRuntime(options: StartRuntimeOptions = {}): Promise<Runtime> {
  const { signal } = options;
  signal?.throwIfAborted();
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
    const sources = {
      appDirectory: config.migrationsDir,
      onLockWait: (name: string, tries: number) => logger.warn({ migration: name, tries }, MIGRATION_WAITS),
    };
    if (options.migrate) await migrate(database.sql, sources);
    else await assertMigrated(database.sql, sources);
    schema = await loadAppSchema(config.schemaFile, config.loadTimeoutMs);
    signal?.throwIfAborted();
  } catch (error) {
    await database.close();
    throw abortedOr(signal, error);
  }
  let nc: NatsConnection;
  try {
    nc = await connectNats({ url: config.natsUrl, auth: config.natsAuth }, logger);
  } catch (error) {
    await database.close();
    throw abortedOr(signal, error);
  }
  const base = { config, logger, database, nats: nc, events: options.events ?? createEmitter() };
  let parts: RuntimeParts;
  try {
    signal?.throwIfAborted();
    parts = await openRuntimeParts(base, signal);
    if (signal?.aborted) {
      await parts.close();
      throw signal.reason;
    }
  } catch (error) {
    await nc.close().catch(() => undefined);
    await database.close();
    throw abortedOr(signal, error);
  }
  const runtime = new ServingRuntime(base, parts, {
    databaseUrl: config.databaseUrl,
    schema,
    healthCheckMs: parseDuration(options.healthCheckInterval ?? DEFAULT_HEALTH_CHECK_INTERVAL),
    productionChecks: options.productionChecks ?? true,
    signal,
  });
  try {
    await runtime.start();
    signal?.throwIfAborted();
  } catch (error) {
    await runtime.stop();
    throw abortedOr(signal, error);
  }
  return runtime;
}

/** What a start that failed throws: the abort's reason when it was aborted (its steps then fail on that). */
function abortedOr(signal: AbortSignal | undefined, error: unknown): unknown {
  return signal?.aborted ? signal.reason : error;
}

/** How often consumers and the stream are checked (stalls, jobs for invalid names). */
export const DEFAULT_HEALTH_CHECK_INTERVAL: Duration = "15s";

/** How the serving runtime was asked to serve (from startRuntime's options). */
interface ServingOptions {
  /** Checked by startRuntime; the readiness probe opens its own connection with it. */
  databaseUrl: string;
  schema?: LoadedAppSchema;
  healthCheckMs: number;
  productionChecks: boolean;
  /** startRuntime's signal: ends the start's requests when aborted, and stops the runtime after it. */
  signal?: AbortSignal;
}

class ServingRuntime implements Runtime {
  readonly config: ResolvedConfig;
  readonly logger: Logger;
  readonly events: RuntimeEmitter;
  readonly stats: InvocationStats;
  readonly database: DatabaseClient;
  readonly nats: NatsConnection;
  readonly #stopping = new AbortController();
  /** Ends deploys' retries: when stopping, or when startRuntime's signal aborts the start. */
  readonly #deploysEnd: AbortSignal;
  /**
   * Until when a deploy asks for its consumer once only: another deploy just waited out NATS's
   * silence in full, and deploys run one after another (500 functions would each wait it again).
   * Those consumers are made by their pullers' recovery once NATS answers.
   */
  #deploysTryOnceUntil = 0;
  readonly #aborting = new AbortController();
  readonly #workers = new Map<string, FunctionWorker>();
  readonly #retiring = new Set<Promise<void>>();
  readonly #parts: RuntimeParts;
  readonly #deployer: Deployer;
  readonly #successes: SuccessRecorder;
  readonly #commitGroups: CommitGroups;
  readonly #isolation: Isolation;
  /** Makes each invocation's `ctx.db`, typed and relational with the app's drizzle schema. */
  readonly #bindDatabase: DatabaseBinder;
  readonly #jobDependencies: JobRunnerDependencies;
  readonly #serving: ServingOptions;
  #callServer: CallServer | undefined;
  #statusApi: Subscription | undefined;
  #cancelApi: Subscription | undefined;
  #enqueueApi: Subscription | undefined;
  /** Opens its bucket and stream when the first function with a concurrency or rate limit is deployed. */
  readonly #flow: FlowControl;
  /** Where every function looks for its waiting priority jobs, all with one read after a reconnect. */
  readonly #priorityBacklog: PriorityBacklog;
  /** Matches stored events with durable waits (ctx.waitForEvent). */
  readonly #eventWaiters: EventWaiters;
  #stopped: Promise<void> | undefined;
  #rejections: RejectionWatch | undefined;
  #operations: Operations | undefined;
  /** `/metrics`, `/livez`, `/readyz`: up from the start of start() to the end of the shutdown. */
  #opsEndpoint: OpsEndpoint | undefined;
  #ready = false;

  constructor(base: RuntimeBase, parts: RuntimeParts, serving: ServingOptions) {
    const { config, logger, database } = base;
    this.config = config;
    this.logger = logger;
    this.database = database;
    this.nats = base.nats;
    this.events = base.events;
    this.stats = trackInvocationStats(this.events);
    // Every invocation in flight listens to the abort signal; hundreds at once are expected.
    setMaxListeners(0, this.#aborting.signal);
    this.#parts = parts;
    this.#serving = serving;
    this.#deploysEnd = serving.signal
      ? AbortSignal.any([this.#stopping.signal, serving.signal])
      : this.#stopping.signal;
    this.#successes = createSuccessRecorder(database.sql);
    this.#commitGroups = createCommitGroups(database.sql, { lanes: commitLanes(config.databasePoolSize), logger });
    this.#bindDatabase = createDatabaseBinder(serving.schema?.exports);
    this.#isolation = createIsolation({
      logger,
      logLimits: config.logLimits,
      loadTimeoutMs: config.loadTimeoutMs,
      schema: serving.schema && { file: serving.schema.file, source: serving.schema.source },
    });
    this.#deployer = createDeployer({
      functionsDir: config.functionsDir,
      watch: config.watch,
      loadTimeoutMs: config.loadTimeoutMs,
      logger,
      events: this.events,
    });
    this.#flow = createFlowControl({
      nc: this.nats,
      manager: parts.manager,
      publisher: parts.publisher,
      jobStream: config.streamName,
      logger,
      replication: config.replication,
      secret: parts.scheduler.secret,
      // Its retries end with a start that was given up, too (startRuntime's signal).
      stopping: this.#deploysEnd,
    });
    this.#priorityBacklog = createPriorityBacklog(parts.manager, config.streamName);
    this.#eventWaiters = new EventWaiters({
      sql: database.sql,
      js: parts.js,
      manager: parts.manager,
      logger,
      resumeSecret: parts.scheduler.secret,
      publishCommitted: (messages, log) => parts.outbox.publishCommitted(messages, log),
    });
    this.#jobDependencies = {
      database,
      successes: this.#successes,
      commitGroups: this.#commitGroups,
      nc: this.nats,
      js: parts.js,
      progress: parts.progress,
      events: this.events,
      logger,
      shutdownSignal: this.#aborting.signal,
      outbox: parts.outbox,
      outage: { waiting: 0 },
      logLimits: config.logLimits,
      cancellations: parts.cancellations,
      bindDatabase: this.#bindDatabase,
      flow: this.#flow,
      resumeSecret: parts.scheduler.secret,
      eventWaiters: this.#eventWaiters,
    };
  }

  get registry(): Registry {
    return this.#deployer.registry;
  }

  async start(): Promise<void> {
    const started = performance.now();
    const { manager, progress, cancellations, delayedStream } = this.#parts;
    await this.#startOpsEndpoint();
    await this.#coverAudit();
    this.#deploysEnd.throwIfAborted();
    // Before any job runs: a wait recorded now has its events matched.
    await this.#eventWaiters.start();
    this.#deployer.onChange((change) => this.#applyDeployment(change));
    await this.#deployer.start();
    this.#deploysEnd.throwIfAborted();
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
      publishPendingJobs: (messages, log) => this.#parts.outbox.publishCommitted(messages, log),
    });
    this.#statusApi = startStatusApi(
      this.nats,
      this.config.queueGroup,
      this.database,
      progress,
      this.logger,
      replyGuard,
      {
        cancelled: (id) => cancellations.cancelled(id),
        scheduled: (id) => findScheduledJob(manager, delayedStream, id),
        waitingJob: waitingJobFinder(this.nats),
        queued: (id, fn) => this.#parts.unrecordedJobs.findIfFree(id, fn),
      },
    );
    this.#cancelApi = startCancelApi({
      nc: this.nats,
      queueGroup: this.config.queueGroup,
      database: this.database,
      progress,
      cancellations,
      scheduled: {
        find: (id) => findScheduledJob(manager, delayedStream, id),
        remove: (job) => removeScheduledJob(manager, job),
      },
      logger: this.logger,
      replyGuard,
    });
    this.#enqueueApi = startEnqueueApi({ ...this.#parts.keyedEnqueue, replyGuard });
    this.#rejections = watchUnhandledRejections(this.logger);
    this.#operations = await startOperations({
      config: this.config,
      nats: this.nats,
      js: this.#parts.js,
      manager,
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
      resumeSecret: this.#parts.scheduler.secret,
      publishCommitted: (messages, log) => this.#parts.outbox.publishCommitted(messages, log),
      productionChecks: this.#serving.productionChecks,
      healthCheckMs: this.#serving.healthCheckMs,
      replyGuard,
    });
    void this.#followNatsStatus();
    // Ready means serving: the server has every subscription (calls, status, discovery) once a
    // round trip made after them comes back, so a caller starting now is not told "no responders".
    await this.nats.flush();
    this.#followSignal();
    this.#ready = true;
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

  /** After the start, startRuntime's signal stops the runtime (during it, startRuntime stops it). */
  #followSignal(): void {
    const { signal } = this.#serving;
    if (!signal || signal.aborted) return;
    const stop = (): void => void this.stop();
    signal.addEventListener("abort", stop, { once: true });
    this.#stopping.signal.addEventListener("abort", () => signal.removeEventListener("abort", stop), { once: true });
  }

  /** Serves metrics and health checks when a metrics port is set; readiness follows #phase. */
  async #startOpsEndpoint(): Promise<void> {
    if (this.config.metricsPort === undefined) return;
    this.#opsEndpoint = await startOpsEndpoint({
      host: this.config.metricsHost,
      port: this.config.metricsPort,
      databaseUrl: this.#serving.databaseUrl,
      nats: this.nats,
      events: this.events,
      stats: this.stats,
      queueDepth: createQueueDepthReader(this.#parts.manager, this.config.streamName),
      logger: this.logger,
      undeployed: () => this.registry.names().filter((name) => !this.#workers.has(name)),
      phase: () => this.#phase(),
    });
  }

  #phase(): RuntimePhase {
    if (this.#stopping.signal.aborted) return "stopping";
    return this.#ready ? "serving" : "starting";
  }

  settled(): Promise<void> {
    return this.#deployer.settled();
  }

  schedules(): ScheduleView[] {
    return this.#parts.scheduler.list();
  }

  outboxLag(): Promise<OutboxLag> {
    return this.#parts.outbox.lag();
  }

  stop(): Promise<void> {
    this.#stopped ??= this.#shutdown();
    return this.#stopped;
  }

  async #applyDeployment(change: DeploymentChange): Promise<void> {
    // A deploy often comes with a new table; make sure it is audited before the code writes to it.
    if (change.added.length + change.updated.length > 0) await this.#coverAudit();
    for (const fn of change.added) await this.#deploy(fn);
    await this.#withdrawListeners(change.added.filter((fn) => !fn.listen));
    for (const { previous, next } of change.updated) await this.#redeploy(previous, next);
    for (const fn of change.removed) this.#undeploy(fn);
  }

  /**
   * Deletes the listener consumers of functions deployed without `on` that an earlier version
   * listened with (changed while no runtime watched its file): the consumer would hold events for a
   * listener that no longer exists, and older runtimes would listen on. One listing of the recorded
   * definitions; then a withdrawal for each function found there (withdrawListenerConsumer).
   */
  async #withdrawListeners(quiet: ResolvedFunction[]): Promise<void> {
    if (quiet.length === 0) return;
    const { definitions, manager } = this.#parts;
    let recorded: Set<string>;
    try {
      recorded = await definitions.recordedFunctions("events");
    } catch (error) {
      this.logger.warn(
        { err: error },
        "Could not list the listeners' definitions; consumers of former listeners stay.",
      );
      return;
    }
    for (const fn of quiet.filter((each) => recorded.has(each.name))) {
      const consumer = listenerConsumerName(fn.name);
      try {
        const outcome = await withdrawListenerConsumer(manager, EVENT_STREAM, fn.name, fn.definedAt, definitions);
        if (outcome === "withdrawn") {
          this.logger.info(
            { fn: fn.name, consumer },
            `${fn.name} no longer listens to events; its consumer is deleted.`,
          );
        }
      } catch (error) {
        this.logger.warn(
          { err: error, fn: fn.name, consumer, stream: EVENT_STREAM },
          "Could not delete the consumer of a function that no longer listens; the next start tries again.",
        );
      }
    }
  }

  async #deploy(deployed: ResolvedFunction): Promise<void> {
    if (this.#deploysEnd.aborted) return;
    const settled = await this.#ensureConsumer(deployed, { untilAnswered: true });
    if (this.#deploysEnd.aborted) return;
    await this.#flow.deployed(deployed, deployed.name);
    if (this.#deploysEnd.aborted) return;
    // An isolated function's handler is replaced by one that runs it in a worker thread.
    const fn = this.#isolation.prepare(deployed);
    const limiter = createLimiter(fn.concurrency);
    const pulling = {
      js: this.#parts.js,
      stream: this.config.streamName,
      fn: fn.name,
      concurrency: () => worker.limiter.capacity,
      heartbeatMs: () =>
        Math.floor(Math.min(ackWaitFor(worker.fn.timeoutMs, this.config.maxAckWaitMs), worker.consumerAckWaitMs) / 3),
      keepAlive: (heldForMs: number) => keepJobAlive(worker.fn.timeoutMs, this.#jobDependencies.outage, heldForMs),
      recover: () => this.#ensureWorkerConsumer(worker),
      logger: this.logger,
    };
    const handleWith =
      (jobLimiter: Limiter) =>
      (message: JsMsg, handlerDone: (handlerMs?: number) => void): Promise<void> =>
        runJob(this.#jobDependencies, worker.fn, jobLimiter, message, jobIdentity, handlerDone);
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
      backlog: this.#priorityBacklog,
      ensureConsumer: (level) => this.#ensureWorkerConsumer(worker, { level }),
    });
    if (fn.listen) worker.listener = await this.#listen(worker);
    this.#parts.scheduler.set(fn);
    this.logger.info({ fn: fn.name, file: fn.file, version: fn.version }, `Deployed ${fn.name}.`);
  }

  async #redeploy(previous: ResolvedFunction, next: ResolvedFunction): Promise<void> {
    const worker = this.#workers.get(next.name);
    if (!worker) return this.#deploy(next);
    // Invocations in flight keep the version (and the worker threads) they started on.
    this.#isolation.retire(worker.fn);
    worker.fn = this.#isolation.prepare(next);
    worker.limiter.capacity = next.concurrency;
    await this.#flow.deployed(next, next.name);
    if (
      previous.timeoutMs !== next.timeoutMs ||
      previous.retry !== next.retry ||
      previous.description !== next.description
    ) {
      await this.#ensureWorkerConsumer(worker, { untilAnswered: true });
    }
    await this.#relisten(worker, previous);
    this.#parts.scheduler.set(next);
    this.logger.info(
      { fn: next.name, version: next.version, previousVersion: previous.version },
      `Redeployed ${next.name}.`,
    );
  }

  /** Tells flow control which functions run here (it opens for the first with limits or waiting jobs). */
  #undeploy(fn: ResolvedFunction): void {
    const worker = this.#workers.get(fn.name);
    if (!worker) return;
    this.#workers.delete(fn.name);
    this.#isolation.retire(worker.fn);
    this.#parts.scheduler.remove(fn.name);
    void this.#flow.deployed(undefined, fn.name);
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
      js: this.#parts.js,
      manager: this.#parts.manager,
      stream: EVENT_STREAM,
      maxAckWaitMs: this.config.maxAckWaitMs,
      definitions: this.#parts.definitions,
      worker,
      dependencies: () => this.#jobDependencies,
      deploying: (what, request) => this.#deploying(what, request),
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
      !worker.listener.listening ||
      previous.listen?.pattern !== next.listen.pattern ||
      previous.listen?.from !== next.listen.from ||
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

  /**
   * Creates or updates a function's consumer with the newest definition, and the consumer of its
   * priority `level` if given; undefined if that failed. A level's consumer exists once the level
   * had a job (flow/priority-consumers.ts); those that exist follow each change of the settings.
   * A deploy asks again while NATS does not answer in time; a puller's recovery has its own loop.
   */
  async #ensureConsumer(fn: ResolvedFunction, options: ConsumerEnsuring = {}): Promise<SettledDefinition | undefined> {
    const { manager } = this.#parts;
    const stream = this.config.streamName;
    const { level } = options;
    // Kept across tries: a try that changed the function's consumer and then went unanswered leaves
    // the next try nothing to change there, and its priority consumers must still follow.
    let changedOnce = false;
    const ensure = (): Promise<SettledDefinition> =>
      ensureFunctionConsumer(
        manager,
        stream,
        fn,
        this.config.maxAckWaitMs,
        this.#parts.definitions,
        async (settings, changed) => {
          changedOnce ||= changed;
          if (changedOnce) await updatePriorityConsumers(manager, stream, fn.name, settings);
          if (level !== undefined) await ensurePriorityConsumer(manager, stream, fn.name, level, settings);
        },
      );
    try {
      if (!options.untilAnswered) return await ensure();
      return await this.#deploying(`the consumer of ${fn.name}`, ensure);
    } catch (error) {
      this.logger.error(
        { err: error, fn: fn.name, level },
        "Could not create or update the function's consumer; retrying while pulling.",
      );
      return undefined;
    }
  }

  /**
   * Runs a deploy's setup `request` (a function's or a listener's consumer) and asks again while
   * NATS does not answer in time (nats/until-answered.ts); asks once until #deploysTryOnceUntil,
   * after another deploy waited out NATS's silence in full.
   */
  async #deploying<T>(what: string, request: () => Promise<T>): Promise<T> {
    if (performance.now() < this.#deploysTryOnceUntil) return await request();
    try {
      return await untilAnswered(what, request, { logger: this.logger, signal: this.#deploysEnd });
    } catch (error) {
      if ((error as { code?: unknown }).code === "E_UNAVAILABLE") {
        this.#deploysTryOnceUntil = performance.now() + DEFAULT_ANSWER_WAIT_MS;
      }
      throw error;
    }
  }

  /** #ensureConsumer for a deployed function, remembering the ack wait in force. */
  async #ensureWorkerConsumer(worker: FunctionWorker, options: ConsumerEnsuring = {}): Promise<void> {
    const settled = await this.#ensureConsumer(worker.fn, options);
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
    await this.#parts.scheduler.close();
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
    await this.#flow.close().catch(() => undefined);
    await this.#eventWaiters.stop();
    await this.#isolation.close();
    await this.#successes
      .flush()
      .catch((error: unknown) => this.logger.error({ err: error }, "Writing final records failed."));
    await this.#commitGroups.close();
    await this.#operations?.close();
    this.#statusApi?.unsubscribe();
    this.#cancelApi?.unsubscribe();
    this.#enqueueApi?.unsubscribe();
    // After the last invocation: the relay, the mover, the watchers, the sealer.
    await this.#parts.close();
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
