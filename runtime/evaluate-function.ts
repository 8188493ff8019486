import { createRequire } from "node:module";
import path from "node:path";
import { pathToFileURL } from "node:url";
import vm from "node:vm";
import * as drizzleOrm from "drizzle-orm";
import * as drizzlePgCore from "drizzle-orm/pg-core";
import * as zod from "zod";
import * as clientApi from "./client-api";
import * as publicApi from "./index";

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
 */
export function evaluateFunctionCode(file: string, code: string): unknown {
  const wrapper = vm.runInThisContext(
    `(function (exports, require, module, __filename, __dirname, __jetfn_meta) {${code}\n})`,
    { filename: file },
  ) as (...args: unknown[]) => void;
  const module = { exports: {} as unknown };
  const requireFromFile = createRequire(file);
  const requireShared = (specifier: string): unknown =>
    specifier in HOST_MODULES ? HOST_MODULES[specifier] : requireFromFile(specifier);
  const meta = { url: pathToFileURL(file).href, dirname: path.dirname(file), filename: file };
  wrapper(module.exports, requireShared, module, file, path.dirname(file), meta);
  return module.exports;
}
