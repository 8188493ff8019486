import type { Sql } from "postgres";
import type { Runtime } from "../../runtime/runtime";
import { createClient } from "../../runtime/sdk/client";
import {
  countDoneJobs,
  createFunctionsFolder,
  ensureBenchJobStream,
  firstStart,
  insertFunctionSource,
  noopFunctionSource,
  resetFirstStart,
  startBenchRuntime,
} from "../jetfn-host";
import { runPool, waitUntil } from "../stats";
import {
  BENCH_TABLE_SQL,
  type CheckResult,
  checkRows,
  drainTimeoutMs,
  type JobContenderFactory,
  type JobKind,
  jobInput,
} from "./job-contender";

/**
 * jetfn: jobs published to `fn.job.<name>` by the client, run by a runtime in this process; each
 * job's outcome is recorded in `jetfn.invocations` (and, for inserts, audited) before its ack.
 */
export const createJetfnJobs: JobContenderFactory = async (context, kind, tag) => {
  const { services, sizes } = context;
  const database = await services.jetfnDatabase(`jetfn_${kind}`);
  // Created after the migrations, in an audited schema: the event trigger attaches the audit.
  if (kind === "insert") await database.sql.unsafe(BENCH_TABLE_SQL);
  const name = `bench-${kind}-${tag}`;
  const source = kind === "insert" ? insertFunctionSource(sizes.concurrency) : noopFunctionSource(sizes.concurrency);
  const folder = await createFunctionsFolder({ [name]: source });
  const nc = await services.connectNats("jetfn-bench-client");
  await ensureBenchJobStream(nc);
  const client = await createClient({ connection: nc });
  let runtime: Runtime | undefined;
  return {
    name: "jetfn",
    database: database.name,
    async fill(count) {
      const started = performance.now();
      await runPool(count, sizes.enqueueInFlight, (index) => client.enqueue(name, jobInput(tag, index)));
      return performance.now() - started;
    },
    async enqueueSequentially(count) {
      const started = performance.now();
      for (let index = 0; index < count; index++) await client.enqueue(name, jobInput(tag, index));
      return performance.now() - started;
    },
    async drain(count) {
      const done = countDoneJobs();
      resetFirstStart();
      runtime = await startBenchRuntime({
        natsUrl: services.natsUrl,
        databaseUrl: database.url,
        functionsDir: folder.dir,
        events: done.events,
      });
      await waitUntil(() => done.count >= count, `${count} jetfn ${kind} jobs`, drainTimeoutMs(count), 2);
      return done.lastAt - (firstStart() ?? Number.NaN);
    },
    async check(count) {
      // Let the runtime finish what it holds, so the counts are final.
      await runtime?.stop();
      return checkJetfnJobs(database.sql, name, kind, count);
    },
    async close() {
      await runtime?.stop();
      await client.close();
      await nc.close();
      await database.drop();
      await folder.remove();
    },
  };
};

/**
 * The outcome of `count` jobs of function `name`, once its runtimes have stopped: every job recorded
 * succeeded once; for inserts, rows = jobs, no duplicates, and one audit row per job stamped with
 * the function and its invocation.
 */
export async function checkJetfnJobs(sql: Sql, name: string, kind: JobKind, count: number): Promise<CheckResult[]> {
  const checks: CheckResult[] = [];
  const [record] = await sql`
    select count(*) filter (where status = 'succeeded')::int as succeeded, count(*)::int as total
    from jetfn.invocations where function = ${name}`;
  checks.push({
    label: "invocations recorded succeeded",
    ok: record?.succeeded === count && record?.total === count,
    detail: `${record?.succeeded} succeeded of ${record?.total} records for ${count} jobs`,
  });
  if (kind === "insert") {
    checks.push(...(await checkRows(sql, count)));
    const [audit] = await sql`
      select count(*)::int as rows, count(distinct invocation_id)::int as invocations,
             count(*) filter (where function = ${name})::int as stamped
      from jetfn.audit_log where table_name = 'bench_rows' and operation = 'INSERT'`;
    checks.push({
      label: "audit rows = rows",
      ok: audit?.rows === count && audit?.invocations === count && audit?.stamped === count,
      detail: `${audit?.rows} audit rows, ${audit?.invocations} invocations, ${audit?.stamped} stamped ${name}`,
    });
  }
  return checks;
}
