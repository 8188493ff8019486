import { access } from "node:fs/promises";
import { resolve } from "node:path";
import type { AppSchema } from "../db/app-database";
import { JetfnError } from "../support/errors";
import { evaluateFunctionCode } from "./evaluate-function";
import { compileModule } from "./loader";

/** The app's drizzle schema module as the runtime loaded it; worker threads evaluate the same build. */
export interface LoadedAppSchema {
  file: string;
  /** The module compiled to CommonJS, as function files are. */
  source: string;
  exports: AppSchema;
}

/**
 * Loads the app's drizzle schema (JETFN_SCHEMA) so `ctx.db` answers relational queries over it. A
 * file that does not exist means no schema: `ctx.db` still has every query builder, no `query`.
 */
export async function loadAppSchema(path: string, timeoutMs: number): Promise<LoadedAppSchema | undefined> {
  const file = resolve(path);
  const exists = await access(file).then(
    () => true,
    () => false,
  );
  if (!exists) return undefined;
  try {
    const source = await compileModule(file);
    const exports = evaluateFunctionCode(file, source, timeoutMs) as AppSchema;
    return { file, source, exports };
  } catch (error) {
    throw new JetfnError(
      "E_CONFIG_INVALID",
      `the app's drizzle schema ${file} (JETFN_SCHEMA) did not load: ${(error as Error).message}`,
      { cause: error },
    );
  }
}
