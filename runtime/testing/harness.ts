import { randomUUID } from "node:crypto";
import path from "node:path";
import { type AuditEntry, listAuditEntries } from "../audit/audit-queries";
import { DEFAULT_TEST_ADMIN_DATABASE_URL, resolveConfig, resolveTestHarnessConfig } from "../config";
import { connectDatabase, type DatabaseClient } from "../db/client";
import type { StoredError } from "../db/invocation-store";
import { migrate } from "../db/migrate";
import { type Runtime, type StartRuntimeOptions, startRuntime } from "../runtime";
import { createClient, type FunctionMap, type JetfnClient } from "../sdk/client";
import { type JetfnError, toJetfnError } from "../support/errors";
import { createLogger } from "../support/logger";
import { startNatsServer, type TestNatsServer } from "./nats-server";
import { createScratchDatabase, type ScratchDatabase } from "./scratch-database";

/** Options of a test harness; everything has a default. */
export interface TestHarnessOptions extends Omit<StartRuntimeOptions, "databaseUrl" | "natsUrl"> {
  /**
   * A Postgres role allowed to create databases; the harness makes a fresh one, migrated.
   * @default process.env.JETFN_TEST_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres"
   */
  adminDatabaseUrl?: string;
}

/** What one job did: its outcome and every change it made, from the audit log. */
export interface JobRun {
  kind: "job";
  id: string;
  status: string;
  result: unknown;
  errors: StoredError[];
  changes: AuditEntry[];
}

/** What one call did: its result or error, and every change it made. */
export interface CallRun {
  kind: "call";
  id: string;
  status: "succeeded" | "failed";
  result: unknown;
  error: JetfnError | undefined;
  changes: AuditEntry[];
}

/** A real runtime on a nats-server and a database of its own, for testing functions. */
export interface TestHarness {
  readonly runtime: Runtime;
  readonly client: JetfnClient;
  /** The harness's database, for the test's own queries. */
  readonly database: DatabaseClient;
  /** Enqueues a job and waits until it succeeds or is dead. */
  enqueue(name: string, input: unknown, options?: { timeout?: string }): Promise<JobRun>;
  /** Calls a function (request-reply); never throws for the function's own errors. */
  call(name: string, input: unknown): Promise<CallRun>;
  close(): Promise<void>;
}

export const DEFAULT_ADMIN_DATABASE_URL = DEFAULT_TEST_ADMIN_DATABASE_URL;

/**
 * Starts a nats-server (JetStream, temporary store, free port), creates and migrates a fresh
 * database, and runs the functions folder in a real runtime: real transactions, audit stamping,
 * retries and timeouts.
 * @example
 * const harness = await startTestHarness({ functionsDir: "functions" });
 * const run = await harness.enqueue("send-mail", { to: ["a@example.com"], subject: "Hi" });
 * expect(run).toHaveWritten("sent_mail", { recipient: "a@example.com" });
 * await harness.close();
 */
export async function startTestHarness(options: TestHarnessOptions = {}): Promise<TestHarness> {
  const environment = resolveTestHarnessConfig();
  const adminUrl = options.adminDatabaseUrl ?? environment.adminDatabaseUrl;
  const [nats, scratch] = await Promise.all([startNatsServer(), createScratchDatabase(adminUrl)]);
  const database = connectDatabase({ url: scratch.url, poolSize: 4 });
  try {
    // The app's migrations too (JETFN_MIGRATIONS, else ./drizzle), as `jetfn migrate` applies them.
    await migrate(database.sql, { appDirectory: resolveConfig(options).migrationsDir });
    const runtime = await startRuntime({
      logger: createLogger({ level: environment.logLevel }),
      shutdownGrace: "5s",
      ...options,
      functionsDir: path.resolve(options.functionsDir ?? "functions"),
      natsUrl: nats.url,
      databaseUrl: scratch.url,
    });
    const client = await createClient<FunctionMap>({ natsUrl: nats.url });
    return new RuntimeHarness(runtime, client, database, nats, scratch);
  } catch (error) {
    await database.close();
    await Promise.allSettled([nats.stop(), scratch.drop()]);
    throw error;
  }
}

class RuntimeHarness implements TestHarness {
  readonly runtime: Runtime;
  readonly client: JetfnClient;
  readonly database: DatabaseClient;
  readonly #nats: TestNatsServer;
  readonly #scratch: ScratchDatabase;

  constructor(
    runtime: Runtime,
    client: JetfnClient,
    database: DatabaseClient,
    nats: TestNatsServer,
    scratch: ScratchDatabase,
  ) {
    this.runtime = runtime;
    this.client = client;
    this.database = database;
    this.#nats = nats;
    this.#scratch = scratch;
  }

  async enqueue(name: string, input: unknown, options: { timeout?: string } = {}): Promise<JobRun> {
    const { id } = await this.client.enqueue(name, input);
    await this.client.result(id, { timeout: options.timeout ?? "30s" }).catch((error: unknown) => {
      if (toJetfnError(error).code === "E_HANDLER_TIMEOUT") throw error;
    });
    const view = await this.client.status(id);
    return {
      kind: "job",
      id,
      status: view.status,
      result: view.result,
      errors: (view.errors ?? []) as StoredError[],
      changes: await this.#changesOf(id),
    };
  }

  async call(name: string, input: unknown): Promise<CallRun> {
    const id = randomUUID();
    try {
      const result = await this.client.call(name, input, { id });
      return { kind: "call", id, status: "succeeded", result, error: undefined, changes: await this.#changesOf(id) };
    } catch (thrown) {
      return {
        kind: "call",
        id,
        status: "failed",
        result: undefined,
        error: toJetfnError(thrown),
        changes: await this.#changesOf(id),
      };
    }
  }

  async close(): Promise<void> {
    await this.client.close();
    await this.runtime.stop();
    await this.database.close();
    await Promise.allSettled([this.#nats.stop(), this.#scratch.drop()]);
  }

  async #changesOf(id: string): Promise<AuditEntry[]> {
    return (await listAuditEntries(this.database.db, { invocationId: id, limit: 10_000 })).reverse();
  }
}
