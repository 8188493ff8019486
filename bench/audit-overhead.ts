import postgres, { type Sql } from "postgres";
import { readProcessRunNs } from "./cpu-use";
import type { RoundContext, Scenario } from "./model";
import { installNaiveAudit, NAIVE_LOGS, NAIVE_ROW, NAIVE_STATEMENT, NAIVE_TABLES } from "./naive-audit";
import { rotate, runPool } from "./stats";

const AUDITED = "audited (jetfn triggers)";
const PLAIN = "not audited";
const SINGLE = "single-row transactions, concurrency 8: time";
const SINGLE_RATE = "single-row transactions, concurrency 8: rate";
const SINGLE_CPU = "single-row transactions, concurrency 8: Postgres backend CPU per transaction";
const BULK_INSERT = "bulk insert";
const BULK_UPDATE = "bulk update";
const BULK_DELETE = "bulk delete";

const TABLES: Record<string, string> = {
  [AUDITED]: "public.audit_bench",
  [PLAIN]: "bench_plain.audit_bench",
  ...NAIVE_TABLES,
};

/** The stamp a function's transaction carries: $1 the function, $2 the invocation id. */
export const STAMP_SQL =
  "select set_config('jetfn.function', $1, true), set_config('jetfn.invocation_id', $2, true), set_config('jetfn.attempt', '1', true)";

/** Where each audited contender's rows are logged (a FROM target, narrowed to the bench table). */
const LOGS: Record<string, string> = {
  [AUDITED]: "jetfn.audit_log where table_name = 'audit_bench'",
  ...NAIVE_LOGS,
};

const TEXTBOOK = [NAIVE_ROW, NAIVE_STATEMENT];

/** jetfn's triggers no slower than the faster of the two textbook triggers on the same writes. */
function target(metric: string, reason: string) {
  return {
    scenario: "audit",
    metric,
    contender: AUDITED,
    kind: "best-peer" as const,
    baselines: TEXTBOOK,
    max: 1,
    reason,
  };
}

/**
 * 7. Audit overhead: the same writes on a table with jetfn's audit triggers, on identical ones with
 * the two textbook audit triggers jetfn must beat (see naive-audit.ts), and on one without (in a
 * schema that is not audited), back to back.
 */
export const auditOverheadScenario: Scenario = {
  id: "audit",
  title: "7. Audit overhead",
  baselines: {
    [SINGLE]: [PLAIN],
    [SINGLE_RATE]: [PLAIN],
    [SINGLE_CPU]: [PLAIN],
    [BULK_INSERT]: [PLAIN],
    [BULK_UPDATE]: [PLAIN],
    [BULK_DELETE]: [PLAIN],
  },
  targets: [
    target(SINGLE, "stamped and keyed, a captured row should cost no more than a textbook trigger's"),
    target(BULK_INSERT, "one statement's rows are captured together, ahead of a row-by-row trigger"),
    target(BULK_UPDATE, "only changed columns are kept, ahead of copying whole rows"),
    target(BULK_DELETE, "one statement's rows are captured together, ahead of a row-by-row trigger"),
  ],
  async run(context) {
    const database = await context.services.jetfnDatabase("jetfn_audit");
    const sql = postgres(database.url, { max: context.sizes.concurrency, onnotice: () => {} });
    try {
      await sql.unsafe("create schema bench_plain");
      for (const table of [TABLES[AUDITED], TABLES[PLAIN]]) {
        await sql.unsafe(`create table ${table} (id bigint primary key, n integer not null, note text not null)`);
      }
      await sql`select jetfn.attach_audit('public.audit_bench'::regclass)`;
      await installNaiveAudit(sql);
      await checkTriggers(context, sql);
      const order = rotate([AUDITED, NAIVE_ROW, NAIVE_STATEMENT, PLAIN], context.round);
      await singleRows(context, sql, order, database.name);
      for (const contender of order) await sql.unsafe(`truncate ${TABLES[contender]}`);
      const rows = context.sizes.auditBulkRows;
      const statements: Array<[string, (table: string) => string]> = [
        [BULK_INSERT, (table) => `insert into ${table} select g, g, 'note ' || g from generate_series(1, ${rows}) g`],
        [BULK_UPDATE, (table) => `update ${table} set n = n + 1`],
        [BULK_DELETE, (table) => `delete from ${table}`],
      ];
      for (const [metric, statement] of statements) {
        for (const contender of order) {
          const started = performance.now();
          await sql.unsafe(statement(TABLES[contender] as string));
          const ms = performance.now() - started;
          context.record({ metric, contender, unit: "ms", better: "lower", value: ms });
        }
      }
      const expected = context.sizes.auditTransactions + rows;
      for (const contender of [AUDITED, NAIVE_ROW, NAIVE_STATEMENT]) {
        const counts = await auditCounts(sql, LOGS[contender] as string);
        context.check(
          contender,
          "audit rows = changed rows",
          counts.inserts === expected && counts.updates === rows && counts.deletes === rows,
          `${counts.inserts} INSERT (want ${expected}), ${counts.updates} UPDATE, ${counts.deletes} DELETE (want ${rows})`,
        );
      }
    } finally {
      await sql.end({ timeout: 5 });
      await database.drop();
    }
  },
};

/** Rows per operation in an audit log. */
interface AuditCounts {
  inserts: number;
  updates: number;
  deletes: number;
}

/** Counts the rows of `log` (a FROM target) per operation. */
async function auditCounts(sql: Sql, log: string): Promise<AuditCounts> {
  const [counts] = await sql.unsafe<AuditCounts[]>(`
    select count(*) filter (where operation = 'INSERT')::int as inserts,
           count(*) filter (where operation = 'UPDATE')::int as updates,
           count(*) filter (where operation = 'DELETE')::int as deletes
    from ${log}`);
  return counts ?? { inserts: 0, updates: 0, deletes: 0 };
}

async function checkTriggers(context: RoundContext, sql: Sql): Promise<void> {
  const rows = await sql`
    select n.nspname as schema, count(t.oid)::int as triggers
    from pg_class c join pg_namespace n on n.oid = c.relnamespace
    left join pg_trigger t on t.tgrelid = c.oid and t.tgname like 'jetfn_audit_%'
    where c.relname = 'audit_bench' group by n.nspname`;
  const count = (schema: string): number => (rows.find((row) => row.schema === schema)?.triggers as number) ?? -1;
  context.check(
    AUDITED,
    "audit triggers on",
    count("public") === 4,
    `${count("public")} triggers on public.audit_bench`,
  );
  context.check(
    PLAIN,
    "no audit triggers",
    count("bench_plain") === 0,
    `${count("bench_plain")} on bench_plain.audit_bench`,
  );
}

/**
 * `auditTransactions` single-row transactions (BEGIN; stamp; INSERT; COMMIT) per contender, over
 * `concurrency` connections. A single-row transaction's time is mostly its COMMIT's
 * WAL flush, which drifts with the machine's load by more than the triggers differ: so the
 * contenders take turns in slices of SINGLE_ROW_SLICES, and each one's time is the sum of its slices.
 */
const SINGLE_ROW_SLICES = 8;

/**
 * CPU (ns) each client backend of `database` has used so far: the pool's, which run the
 * transactions (the server's own processes and autovacuum are left out: they serve whoever ran
 * before as much as whoever runs now). Undefined where /proc is missing.
 */
async function backendCpu(sql: Sql, database: string): Promise<Map<number, number> | undefined> {
  const rows = await sql<{ pid: number }[]>`
    select pid from pg_stat_activity where datname = ${database} and backend_type = 'client backend'`;
  const cpu = new Map<number, number>();
  for (const { pid } of rows) {
    const ns = await readProcessRunNs(pid);
    if (ns !== undefined) cpu.set(pid, ns); // Otherwise gone meanwhile.
  }
  return rows.length > 0 && cpu.size === 0 ? undefined : cpu;
}

async function singleRows(context: RoundContext, sql: Sql, order: readonly string[], database: string): Promise<void> {
  const { auditTransactions, concurrency } = context.sizes;
  const spent = new Map(order.map((contender) => [contender, 0]));
  // CPU of the backends running the transactions, ns per contender: time is mostly waiting for
  // the WAL flush, so the triggers' own cost shows better here.
  const backendNs = new Map<string, number>();
  const slice = Math.ceil(auditTransactions / SINGLE_ROW_SLICES);
  for (let first = 0; first < auditTransactions; first += slice) {
    const count = Math.min(slice, auditTransactions - first);
    // Each slice in another order too, so none always runs right after the same neighbour.
    for (const contender of rotate(order, first / slice)) {
      const table = TABLES[contender] as string;
      const cpuBefore = await backendCpu(sql, database);
      const started = performance.now();
      await runPool(count, concurrency, (offset) =>
        sql.begin(async (tx) => {
          const index = first + offset;
          await tx.unsafe(STAMP_SQL, ["audit-bench", `audit-bench-${index}`]);
          await tx.unsafe(`insert into ${table} (id, n, note) values ($1, $2, 'single')`, [index + 1, index]);
        }),
      );
      spent.set(contender, (spent.get(contender) ?? 0) + performance.now() - started);
      const cpuAfter = await backendCpu(sql, database);
      if (cpuBefore && cpuAfter) {
        let used = 0;
        for (const [pid, ns] of cpuAfter) used += Math.max(0, ns - (cpuBefore.get(pid) ?? 0));
        backendNs.set(contender, (backendNs.get(contender) ?? 0) + used);
      }
    }
  }
  // Each contender measured in every slice, or none is reported (no /proc).
  for (const [contender, ns] of backendNs) {
    const value = ns / 1_000 / auditTransactions;
    context.record({ metric: SINGLE_CPU, contender, unit: "µs", better: "lower", value });
  }
  for (const [contender, ms] of spent) {
    context.record({ metric: SINGLE, contender, unit: "ms", better: "lower", value: ms });
    context.record({
      metric: SINGLE_RATE,
      contender,
      unit: "tx/s",
      better: "higher",
      value: (auditTransactions * 1000) / ms,
    });
  }
}
