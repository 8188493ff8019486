import { rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import postgres from "postgres";
import type { TestProject } from "vitest/node";
import { migrate } from "../../runtime/db/migrate";
import { functionTypesFile, writeFunctionTypes } from "../../runtime/sdk/function-types";
import { adminUrl, databaseUrl } from "./database-url";

declare module "vitest" {
  export interface ProvidedContext {
    templateDatabase: string;
  }
}

const repository = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

/**
 * Generates jetfn-functions.ts (the type tests import it, and a fresh clone has none), then creates
 * one migrated template database per test run; each test file clones it.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const functionsDir = path.join(repository, "functions");
  await writeFunctionTypes(functionsDir, functionTypesFile(functionsDir));
  const template = `jetfn_tpl_${process.pid}_${Date.now()}`;
  const admin = postgres(adminUrl(), { max: 1, onnotice: () => {} });
  await admin.unsafe(`create database ${template}`);
  const sql = postgres(databaseUrl(template), { max: 2, onnotice: () => {} });
  try {
    await migrate(sql, { appDirectory: path.join(repository, "drizzle") });
  } finally {
    await sql.end();
  }
  project.provide("templateDatabase", template);
  return async () => {
    // The app the package.*.test.ts files installed jetfn into (see installedApp), if they ran.
    await rm(path.join(tmpdir(), `jetfn-package-${template}`), { recursive: true, force: true });
    await admin.unsafe(`drop database if exists ${template} with (force)`);
    await admin.end();
  };
}
