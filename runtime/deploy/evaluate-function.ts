import { createRequire } from "node:module";
import path from "node:path";
import { pathToFileURL } from "node:url";
import vm from "node:vm";
import * as drizzleOrm from "drizzle-orm";
import * as drizzlePgCore from "drizzle-orm/pg-core";
import * as zod from "zod";
import * as clientApi from "../client-api";
import * as publicApi from "../index";

/**
 * Modules a function file shares with the runtime instead of getting its own copy: the public API
 * (so `instanceof` and zod schemas agree) and the libraries whose objects cross the boundary.
 */
const HOST_MODULES: Record<string, unknown> = {
  jetfn: publicApi,
  "jetfn/client": clientApi,
  zod,
  "drizzle-orm": drizzleOrm,
  "drizzle-orm/pg-core": drizzlePgCore,
};

/**
 * Runs a function file compiled to CommonJS (by the loader) in this context and returns its
 * exports. Used by the loader, and by a worker thread of an isolated function to load its copy.
 * Top-level code still running after `timeoutMs` (`while (true) {}`) is stopped: it throws an
 * error with code `ERR_SCRIPT_EXECUTION_TIMEOUT`, and the thread carries on.
 */
export function evaluateFunctionCode(file: string, code: string, timeoutMs?: number): unknown {
  const wrapper = vm.runInThisContext(
    `(function (exports, require, module, __filename, __dirname, __jetfn_meta) {${code}\n})`,
    { filename: file },
  ) as (...args: unknown[]) => void;
  const module = { exports: {} as unknown };
  const requireFromFile = createRequire(file);
  const requireShared = (specifier: string): unknown =>
    specifier in HOST_MODULES ? HOST_MODULES[specifier] : requireFromFile(specifier);
  const meta = { url: pathToFileURL(file).href, dirname: path.dirname(file), filename: file };
  const run = (): void => wrapper(module.exports, requireShared, module, file, path.dirname(file), meta);
  if (timeoutMs === undefined) run();
  else runWithTimeout(run, timeoutMs);
  return module.exports;
}

// V8 can stop only code that a vm script runs (a watchdog thread interrupts it), so the call to the
// file's top level is made from a tiny script, reaching it through a global slot.
const RUN_SLOT = Symbol.for("jetfn.evaluate");
const RUN_SCRIPT = new vm.Script(`globalThis[Symbol.for("jetfn.evaluate")]()`, { filename: "jetfn:evaluate" });

function runWithTimeout(run: () => void, timeoutMs: number): void {
  const slots = globalThis as unknown as Record<symbol, (() => void) | undefined>;
  slots[RUN_SLOT] = run;
  try {
    RUN_SCRIPT.runInThisContext({ timeout: timeoutMs });
  } finally {
    delete slots[RUN_SLOT];
  }
}
