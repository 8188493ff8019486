import postgres, { type Sql } from "postgres";
import type { BenchDatabase, Services } from "../services";
import { BENCH_TABLE_SQL, type BenchJobInput, type JobKind } from "./job-contender";

/** A fresh database for a peer, with the bench table and a pool for its jobs' inserts. */
export interface PeerDatabase {
  readonly database: BenchDatabase;
  /** The work of one job: nothing, or one autocommitted insert (one round trip). */
  work(input: BenchJobInput): Promise<void>;
  close(): Promise<void>;
}

/** Creates the database and the job pool (as many connections as the workers' concurrency). */
export async function createPeerDatabase(
  services: Services,
  label: string,
  kind: JobKind,
  concurrency: number,
): Promise<PeerDatabase> {
  const database = await services.emptyDatabase(label);
  await database.sql.unsafe(BENCH_TABLE_SQL);
  const jobs: Sql = postgres(database.url, { max: concurrency, onnotice: () => {} });
  return {
    database,
    async work(input) {
      if (kind === "insert") await jobs`insert into bench_rows (job_key, n) values (${input.key}, ${input.n})`;
    },
    async close() {
      await jobs.end({ timeout: 5 });
      await database.drop();
    },
  };
}
