import postgres, { type Sql } from "postgres";
import type { BenchDatabase, Services } from "../services";
import { BENCH_TABLE_SQL, type BenchJobInput, type CheckResult, checkRows, type JobKind } from "./job-contender";
import { checkGuarantees, GUARANTEES_SQL, insertOnce, type PeerJob } from "./peer-guarantees";

/** A fresh database for a peer, with the bench table and a pool for its jobs' inserts. */
export interface PeerDatabase {
  readonly database: BenchDatabase;
  /**
   * The work of one job: nothing, one autocommitted insert (one round trip), or, with the
   * guarantees, that insert audited and recorded once in a transaction of its own.
   */
  work(input: BenchJobInput, job: PeerJob): Promise<void>;
  /** Checks rows = jobs and no duplicates, and with the guarantees the audit and effects rows. */
  checkRows(count: number, task: string): Promise<CheckResult[]>;
  close(): Promise<void>;
}

/** Creates the database and the job pool (as many connections as the workers' concurrency). */
export async function createPeerDatabase(
  services: Services,
  label: string,
  kind: JobKind,
  concurrency: number,
  guarantees = false,
): Promise<PeerDatabase> {
  const database = await services.emptyDatabase(label);
  await database.sql.unsafe(BENCH_TABLE_SQL);
  if (guarantees) await database.sql.unsafe(GUARANTEES_SQL);
  const jobs: Sql = postgres(database.url, { max: concurrency, onnotice: () => {} });
  return {
    database,
    async work(input, job) {
      if (kind !== "insert") return;
      if (guarantees) await insertOnce(jobs, job, input);
      else await jobs`insert into bench_rows (job_key, n) values (${input.key}, ${input.n})`;
    },
    async checkRows(count, task) {
      const checks = await checkRows(database.sql, count);
      if (guarantees) checks.push(...(await checkGuarantees(database.sql, count, task)));
      return checks;
    },
    async close() {
      await jobs.end({ timeout: 5 });
      await database.drop();
    },
  };
}
