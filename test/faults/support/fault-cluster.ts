import { randomUUID } from "node:crypto";
import { type JetStreamClient, jetstream } from "@nats-io/jetstream";
import { connect, headers, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll } from "vitest";
import { type CliProcess, spawnCli } from "../../helpers/cli";
import { createTestEnvironment, FIXTURE_FUNCTIONS, type TestEnvironment } from "../../helpers/environment";

/** True when the full (slow) fault runs were asked for: `npm run test:faults`. */
export const FULL = process.env.JETFN_FAULTS_FULL === "1";

/** Picks the full or the bounded figure. */
export function scale(full: number, bounded: number): number {
  return FULL ? full : bounded;
}

/** A nats-server, a database and `jetfn start` processes on them, for one fault test file. */
export interface FaultCluster {
  readonly env: TestEnvironment;
  readonly cliEnv: NodeJS.ProcessEnv;
  /** Runtimes started so far, by slot; a slot's process is replaced by restart(). */
  readonly runtimes: CliProcess[];
  /** Spawns `jetfn start` and waits until it is ready. */
  spawnRuntime(extraEnv?: NodeJS.ProcessEnv): Promise<CliProcess>;
  /** Kills slot `index` with SIGKILL (its own pid) and starts a fresh process in its place. */
  killAndRestart(index: number): Promise<void>;
  /**
   * Acts as a process supervisor (systemd, Kubernetes): every `intervalMs`, starts a fresh process in
   * the slot of any runtime that exited. Returns how to stop supervising and how many were restarted.
   */
  supervise(intervalMs?: number): { stop(): Promise<void>; readonly restarts: number };
  /** A raw NATS connection of the test (publisher side). */
  readonly nc: NatsConnection;
  readonly js: JetStreamClient;
  close(): Promise<void>;
}

/** Starts the environment and creates `fault_rows`, the one table the fault fixtures write. */
/**
 * For a test file: a fault cluster with two `jetfn start` runtimes, made before the file's tests and
 * closed after them. Returns a getter, valid once the tests run.
 */
export function useFaultCluster(extraEnv: NodeJS.ProcessEnv = {}): () => FaultCluster {
  let cluster: FaultCluster | undefined;
  beforeAll(async () => {
    cluster = await createFaultCluster(extraEnv);
    const started = cluster;
    await Promise.all([started.spawnRuntime(), started.spawnRuntime()]);
  }, 120_000);
  afterAll(async () => {
    await cluster?.close();
  }, 60_000);
  return () => cluster as FaultCluster;
}

export async function createFaultCluster(extraEnv: NodeJS.ProcessEnv = {}): Promise<FaultCluster> {
  const env = await createTestEnvironment();
  await env.database.sql`
    create table fault_rows (id bigserial primary key, n int not null, invocation text not null, attempt int not null)`;
  const cliEnv: NodeJS.ProcessEnv = {
    NATS_URL: env.nats.url,
    DATABASE_URL: env.database.url,
    JETFN_FUNCTIONS: FIXTURE_FUNCTIONS,
    LOG_LEVEL: "info",
    JETFN_SHUTDOWN_GRACE: "3s",
    JETFN_DB_POOL: "10",
    ...extraEnv,
  };
  const nc = await connect({ servers: env.nats.url, maxReconnectAttempts: -1, reconnectTimeWait: 250 });
  const runtimes: CliProcess[] = [];
  const spawnRuntime = async (extraEnv: NodeJS.ProcessEnv = {}): Promise<CliProcess> => {
    // The cluster's runtimes belong to the cluster (restarted in tests, stopped by close()).
    const runtime = spawnCli(["start"], { ...cliEnv, ...extraEnv }, { laterTestsUseIt: true });
    await runtime.waitFor("Runtime ready", 60_000);
    return runtime;
  };
  return {
    env,
    cliEnv,
    runtimes,
    nc,
    js: jetstream(nc),
    async spawnRuntime(extraEnv) {
      const runtime = await spawnRuntime(extraEnv);
      runtimes.push(runtime);
      return runtime;
    },
    async killAndRestart(index) {
      const victim = runtimes[index] as CliProcess;
      process.kill(victim.child.pid as number, "SIGKILL");
      await victim.stop();
      runtimes[index] = await spawnRuntime();
    },
    supervise(intervalMs = 250) {
      let restarts = 0;
      let stopped = false;
      const loop = (async () => {
        while (!stopped) {
          for (const [index, runtime] of runtimes.entries()) {
            if (runtime.child.exitCode === null && runtime.child.signalCode === null) continue;
            restarts++;
            runtimes[index] = await spawnRuntime();
          }
          await new Promise((resolve) => setTimeout(resolve, intervalMs));
        }
      })();
      return {
        get restarts() {
          return restarts;
        },
        async stop() {
          stopped = true;
          await loop;
        },
      };
    },
    async close() {
      if (process.env.JETFN_FAULTS_DEBUG) {
        for (const runtime of runtimes) {
          const lines = runtime.output().split("\n");
          const notable = lines.filter((line) => !line.includes('"level":30'));
          process.stdout.write(
            `--- runtime ${runtime.child.pid}: ${lines.length} lines\n${notable.slice(-60).join("\n")}\n`,
          );
        }
      }
      await Promise.allSettled(runtimes.map((runtime) => runtime.stop("SIGKILL")));
      await nc.close().catch(() => {});
      await env.close();
    },
  };
}

/**
 * Enqueues `count` jobs of `fn` the way a careful client does: each with its own random id (also
 * the Nats-Msg-Id), retried with the same id until JetStream acknowledges it. Returns the ids of
 * the acknowledged jobs and how many publishes had to be retried.
 */
export async function enqueueAcknowledged(
  js: JetStreamClient,
  fn: string,
  count: number,
  input: (n: number) => unknown,
  options: { parallel?: number; deadlineMs?: number } = {},
): Promise<{ ids: string[]; retried: number }> {
  const ids: string[] = new Array(count);
  const deadline = Date.now() + (options.deadlineMs ?? 120_000);
  let next = 0;
  let retried = 0;
  const worker = async (): Promise<void> => {
    while (next < count) {
      const n = next++;
      const id = randomUUID();
      const header = headers();
      header.set("Jetfn-Id", id);
      for (;;) {
        try {
          await js.publish(`fn.job.${fn}`, JSON.stringify(input(n)), { msgID: id, headers: header, timeout: 2_000 });
          ids[n] = id;
          break;
        } catch (error) {
          if (Date.now() > deadline) throw error;
          retried++;
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
      }
    }
  };
  await Promise.all(Array.from({ length: options.parallel ?? 64 }, worker));
  return { ids, retried };
}

/** What the database holds for a set of jobs of fault-insert. */
export interface AppliedCounts {
  /** Jobs recorded succeeded in jetfn.invocations. */
  succeeded: number;
  /** Rows in fault_rows. */
  rows: number;
  /** Distinct invocations among those rows. */
  distinctInvocations: number;
  /** Invocations with more than one row (applied twice). */
  duplicated: number;
  /** Acknowledged ids with no row. */
  lost: number;
  /** Rows of fault_rows in the audit log (inserts). */
  auditRows: number;
  /** Audit rows whose invocation id has no row, or that name another invocation than their row. */
  auditMismatches: number;
}

/** Counts rows, audit rows and invocation records for the acknowledged ids. */
export async function countApplied(
  env: Pick<TestEnvironment, "database">,
  ids: readonly string[],
): Promise<AppliedCounts> {
  const sql = env.database.sql;
  const [counts] = await sql<{ rows: number; distinct: number; duplicated: number }[]>`
    select count(*)::int as rows, count(distinct invocation)::int as distinct,
      (select count(*)::int from (select invocation from fault_rows group by invocation having count(*) > 1) d) as duplicated
    from fault_rows`;
  const [lost] = await sql<{ lost: number }[]>`
    select count(*)::int as lost from unnest(${sql.array(ids as string[])}::text[]) as acknowledged(id)
    where not exists (select 1 from fault_rows where invocation = acknowledged.id)`;
  const [succeeded] = await sql<{ succeeded: number }[]>`
    select count(*)::int as succeeded from jetfn.invocations
    where function = 'fault-insert' and status = 'succeeded'`;
  const [audit] = await sql<{ audit: number; mismatches: number }[]>`
    select count(*)::int as audit,
      count(*) filter (where not exists (
        select 1 from fault_rows r where r.invocation = a.invocation_id and r.id = (a.new_row->>'id')::bigint))::int as mismatches
    from jetfn.audit_log a where a.table_name = 'fault_rows' and a.operation = 'INSERT'`;
  return {
    succeeded: succeeded?.succeeded ?? 0,
    rows: counts?.rows ?? 0,
    distinctInvocations: counts?.distinct ?? 0,
    duplicated: counts?.duplicated ?? 0,
    lost: lost?.lost ?? 0,
    auditRows: audit?.audit ?? 0,
    auditMismatches: audit?.mismatches ?? 0,
  };
}

/** Jobs of fault-insert that needed more than one delivery (their first runtime died, or it failed). */
export async function countRedelivered(env: TestEnvironment): Promise<number> {
  const [row] = await env.database.sql<{ redelivered: number }[]>`
    select count(*)::int as redelivered from jetfn.invocations where function = 'fault-insert' and attempts > 1`;
  return row?.redelivered ?? 0;
}

/** Waits until every acknowledged job of fault-insert is recorded succeeded, or the deadline passes. */
export async function waitForSucceeded(
  env: Pick<TestEnvironment, "database">,
  expected: number,
  timeoutMs: number,
): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const [row] = await env.database.sql<{ succeeded: number }[]>`
      select count(*)::int as succeeded from jetfn.invocations where function = 'fault-insert' and status = 'succeeded'`;
    const succeeded = row?.succeeded ?? 0;
    if (succeeded >= expected || Date.now() > deadline) return succeeded;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

/** Status and error code of one job, as recorded in jetfn.invocations. */
export async function jobOutcome(
  env: TestEnvironment,
  id: string,
): Promise<
  { status: string; code: string | null; attempts: number; errors: { at: string; code: string }[] } | undefined
> {
  const [row] = await env.database.sql<{ status: string; code: string | null; attempts: number; errors: never }[]>`
    select status, error->>'code' as code, attempts, errors from jetfn.invocations where id = ${id}`;
  return row;
}

/** CPU time (user + system, in clock ticks) a process has used so far, from /proc. */
export async function cpuTicks(pid: number): Promise<number> {
  const { readFile } = await import("node:fs/promises");
  const fields = (await readFile(`/proc/${pid}/stat`, "utf8")).split(") ")[1]?.split(" ") ?? [];
  return Number(fields[11]) + Number(fields[12]);
}

/** Writes one line of figures for RELIABILITY.md to the test output. */
export function report(scenario: string, figures: Record<string, unknown>): void {
  process.stdout.write(`[faults] ${scenario} ${JSON.stringify({ full: FULL, ...figures })}\n`);
}

/** What keepCalling counted. */
export interface CallCounts {
  ok: number;
  failed: number;
  /** The slowest answered call. */
  worstMs: number;
  /** The longest time between two answered calls (or from the first call to the first answer). */
  longestGapMs: number;
}

/**
 * Calls `add` every 100ms until stopped; counts answered and unanswered calls, the slowest answer and
 * the longest time without an answer.
 */
export function keepCalling(nc: NatsConnection): { stop(): Promise<CallCounts> } {
  let stopped = false;
  const counts: CallCounts = { ok: 0, failed: 0, worstMs: 0, longestGapMs: 0 };
  let lastAnswer = performance.now();
  const loop = (async () => {
    while (!stopped) {
      const started = performance.now();
      try {
        const reply = await nc.request("fn.call.add", JSON.stringify({ a: 1, b: 2 }), { timeout: 1_000 });
        const now = performance.now();
        counts.worstMs = Math.max(counts.worstMs, Math.round(now - started));
        if ((reply.json() as { sum?: number }).sum === 3) {
          counts.ok++;
          counts.longestGapMs = Math.max(counts.longestGapMs, Math.round(now - lastAnswer));
          lastAnswer = now;
        } else counts.failed++;
      } catch {
        counts.failed++;
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  })();
  return {
    async stop() {
      stopped = true;
      await loop;
      return counts;
    },
  };
}
