import type { Sql } from "postgres";
import { rowLevelAuditSql } from "../naive-audit";
import type { BenchJobInput, CheckResult } from "./job-contender";

/**
 * What a peer's users add by hand to get jetfn's guarantees on a database-writing job:
 *  - the textbook row-level jsonb audit trigger under the job's table, its rows stamped with the
 *    task's name and the job's id (set with `set_config` in the job's transaction);
 *  - an effects row keyed by the job's id, written in the same transaction as the job's insert,
 *    so a redelivered job finds it and is not applied twice.
 * The stamp uses the same settings as the audit scenario's textbook trigger reads.
 */
const AUDIT_SCHEMA = "bench_peer_audit";

/** Schema of the guarantees, created in a peer's database after the bench table. */
export const GUARANTEES_SQL = `
create table bench_effects (job_id text primary key, applied_at timestamptz not null default now());
create schema ${AUDIT_SCHEMA};
${rowLevelAuditSql(AUDIT_SCHEMA, "public.bench_rows")}`;

/** The job a peer hands to its task: the task's name and the job's id in that peer. */
export interface PeerJob {
  task: string;
  id: string;
}

/**
 * One job's insert with the guarantees: one transaction that stamps the audit, records the effect
 * (skipping the insert when the job was already applied), and inserts the row.
 */
export async function insertOnce(sql: Sql, job: PeerJob, input: BenchJobInput): Promise<void> {
  await sql.begin(async (tx) => {
    await tx`select set_config('jetfn.function', ${job.task}, true), set_config('jetfn.invocation_id', ${job.id}, true)`;
    const applied =
      await tx`insert into bench_effects (job_id) values (${job.id}) on conflict do nothing returning job_id`;
    if (applied.length === 0) return; // Redelivered after its commit: already applied.
    await tx`insert into bench_rows (job_key, n) values (${input.key}, ${input.n})`;
  });
}

/** Checks audit rows = jobs, each stamped with the task and a job whose effect is recorded; effects = jobs. */
export async function checkGuarantees(sql: Sql, count: number, task: string): Promise<CheckResult[]> {
  const [audit] = await sql`
    select count(*)::int as rows, count(distinct invocation_id)::int as jobs,
           count(*) filter (where function = ${task})::int as stamped,
           count(*) filter (where invocation_id in (select job_id from bench_effects))::int as matched
    from ${sql(AUDIT_SCHEMA)}.audit_log where table_name = 'bench_rows' and operation = 'INSERT'`;
  const [effects] = await sql`select count(*)::int as rows from bench_effects`;
  return [
    {
      label: "audit rows = rows",
      ok: audit?.rows === count && audit?.jobs === count && audit?.stamped === count && audit?.matched === count,
      detail: `${audit?.rows} audit rows, ${audit?.jobs} job ids, ${audit?.stamped} stamped ${task}, ${audit?.matched} with an effects row`,
    },
    {
      label: "effects rows = jobs",
      ok: effects?.rows === count,
      detail: `${effects?.rows} effects rows for ${count} jobs`,
    },
  ];
}
