import { randomBytes } from "node:crypto";
import postgres from "postgres";

/** A database made for one test run, dropped afterwards. */
export interface ScratchDatabase {
  readonly name: string;
  readonly url: string;
  drop(): Promise<void>;
}

/** Creates an empty database next to `adminUrl`'s (the role must be allowed to create databases). */
export async function createScratchDatabase(adminUrl: string): Promise<ScratchDatabase> {
  const name = `jetfn_scratch_${process.pid}_${randomBytes(4).toString("hex")}`;
  await withAdmin(adminUrl, (admin) => admin.unsafe(`create database ${name}`));
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  return {
    name,
    url: url.toString(),
    drop: () => withAdmin(adminUrl, (admin) => admin.unsafe(`drop database if exists ${name} with (force)`)),
  };
}

async function withAdmin(adminUrl: string, run: (admin: postgres.Sql) => Promise<unknown>): Promise<void> {
  const admin = postgres(adminUrl, { max: 1, onnotice: () => {} });
  try {
    await run(admin);
  } finally {
    await admin.end({ timeout: 2 });
  }
}
