import path from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";
import { type FunctionDefinition, isFunctionDefinition } from "../sdk/define-function";
import { JetfnError } from "../support/errors";
import { evaluateFunctionCode } from "./evaluate-function";
import { registerFunctionSourceMap } from "./function-source-maps";

/** The outcome of loading one function file. */
export type LoadResult =
  | { ok: true; file: string; definition: FunctionDefinition; dependencies: string[] }
  | { ok: false; file: string; error: JetfnError; dependencies: string[] };

// The folder holding the public entry (`index.ts`): one up from this module's own folder.
const RUNTIME_DIR = path.dirname(path.dirname(fileURLToPath(import.meta.url)));

/** esbuild plugin: imports of the runtime's public entry resolve to the running runtime. */
const hostRuntimePlugin: esbuild.Plugin = {
  name: "jetfn-host-runtime",
  setup(build) {
    build.onResolve({ filter: /.*/ }, (args) => {
      if (args.path === "jetfn") return { path: "jetfn", external: true };
      if (!args.path.startsWith(".") && !path.isAbsolute(args.path)) return undefined;
      const target = path.resolve(args.resolveDir, args.path).replace(/\.(ts|js)$/, "");
      if (target === RUNTIME_DIR || target === path.join(RUNTIME_DIR, "index")) {
        return { path: "jetfn", external: true };
      }
      return undefined;
    });
  },
};

const BUILD_OPTIONS: esbuild.BuildOptions = {
  bundle: true,
  write: false,
  format: "cjs",
  platform: "node",
  target: "node20",
  packages: "external",
  sourcemap: "inline",
  metafile: true,
  logLevel: "silent",
  outdir: "/jetfn-out",
  plugins: [hostRuntimePlugin],
  define: {
    "import.meta.url": "__jetfn_meta.url",
    "import.meta.dirname": "__jetfn_meta.dirname",
    "import.meta.filename": "__jetfn_meta.filename",
  },
};

/** Options of loading function files. */
export interface LoadOptions {
  /** Longest a file's top-level code may run; a file still running is refused. @default DEFAULT_LOAD_TIMEOUT_MS */
  timeoutMs?: number;
}

/** 10 s: far more than any function file's imports and definitions need. */
export const DEFAULT_LOAD_TIMEOUT_MS = 10_000;

/**
 * Compiles and evaluates function files. One esbuild pass for all of them; if any has a syntax
 * error, each is compiled on its own so one broken file cannot hold back the others.
 */
export async function loadFunctionFiles(files: readonly string[], options: LoadOptions = {}): Promise<LoadResult[]> {
  if (files.length === 0) return [];
  const batch = await compile(files).catch(() => undefined);
  if (batch) return files.map((file) => evaluateCompiled(file, batch, options));
  return Promise.all(files.map((file) => loadFunctionFile(file, options)));
}

/** Compiles and evaluates one function file. */
export async function loadFunctionFile(file: string, options: LoadOptions = {}): Promise<LoadResult> {
  try {
    return evaluateCompiled(file, await compile([file]), options);
  } catch (error) {
    return { ok: false, file, error: describeBuildFailure(file, error), dependencies: [file] };
  }
}

/** Compiles one module (the app's drizzle schema) as function files are compiled: to CommonJS, imports of packages left to the runtime. */
export async function compileModule(file: string): Promise<string> {
  const compiled = (await compile([file])).outputs.get(path.resolve(file));
  if (!compiled) throw new JetfnError("E_FUNCTION_LOAD_FAILED", `${file}: esbuild produced no output for this file`);
  registerFunctionSourceMap(file, compiled.code, compiled.outputDir);
  return compiled.code;
}

interface CompiledBatch {
  outputs: Map<string, { code: string; dependencies: string[]; outputDir: string }>;
}

async function compile(files: readonly string[]): Promise<CompiledBatch> {
  const result = await esbuild.build({ ...BUILD_OPTIONS, entryPoints: [...files] });
  const metafile = result.metafile as esbuild.Metafile;
  const codeByOutput = new Map(result.outputFiles?.map((output) => [output.path, output.text]));
  const outputs: CompiledBatch["outputs"] = new Map();
  for (const [outputPath, meta] of Object.entries(metafile.outputs)) {
    if (!meta.entryPoint) continue;
    const entry = path.resolve(meta.entryPoint);
    const dependencies = Object.keys(meta.inputs)
      .filter((input) => !input.includes("node_modules"))
      .map((input) => path.resolve(input));
    const code = codeByOutput.get(path.resolve(outputPath)) ?? "";
    outputs.set(entry, { code, dependencies, outputDir: path.dirname(path.resolve(outputPath)) });
  }
  return { outputs };
}

function evaluateCompiled(file: string, batch: CompiledBatch, options: LoadOptions): LoadResult {
  const compiled = batch.outputs.get(path.resolve(file));
  if (!compiled) {
    const error = new JetfnError("E_FUNCTION_LOAD_FAILED", `${file}: esbuild produced no output for this file`);
    return { ok: false, file, error, dependencies: [file] };
  }
  const { dependencies } = compiled;
  registerFunctionSourceMap(file, compiled.code, compiled.outputDir);
  let exported: unknown;
  const timeoutMs = options.timeoutMs ?? DEFAULT_LOAD_TIMEOUT_MS;
  try {
    exported = evaluateFunctionCode(file, compiled.code, timeoutMs);
  } catch (error) {
    return { ok: false, file, error: loadFailure(file, error, timeoutMs), dependencies };
  }
  const definition = (exported as { default?: unknown } | undefined)?.default;
  if (definition === undefined) {
    const error = new JetfnError(
      "E_FUNCTION_INVALID",
      `${file} has no default export; write \`export default defineFunction({ ... })\``,
    );
    return { ok: false, file, error, dependencies };
  }
  if (!isFunctionDefinition(definition)) {
    const error = new JetfnError(
      "E_FUNCTION_INVALID",
      `${file}: the default export is not a defineFunction(...) definition (got ${describeValue(definition)})`,
    );
    return { ok: false, file, error, dependencies };
  }
  // An isolated function's worker threads evaluate this very build, never a newer file on disk.
  if ((definition.spec as { isolation?: unknown }).isolation === "thread")
    compiledSources.set(definition, compiled.code);
  return { ok: true, file, definition, dependencies };
}

const compiledSources = new WeakMap<FunctionDefinition, string>();

/** The compiled code a definition with `isolation: "thread"` was evaluated from (for its worker threads). */
export function compiledSourceOf(definition: FunctionDefinition): string | undefined {
  return compiledSources.get(definition);
}

/** Why evaluating a file failed: its top level threw, or ran past the time limit and was stopped. */
function loadFailure(file: string, error: unknown, timeoutMs: number): JetfnError {
  if ((error as { code?: unknown } | undefined)?.code === "ERR_SCRIPT_EXECUTION_TIMEOUT") {
    return new JetfnError(
      "E_FUNCTION_LOAD_FAILED",
      `${file} did not finish loading within ${timeoutMs}ms and was stopped: its top-level code runs too long or never ends (JETFN_LOAD_TIMEOUT)`,
      { cause: error },
    );
  }
  const reason = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
  return new JetfnError("E_FUNCTION_LOAD_FAILED", `${file} threw while loading: ${reason}`, { cause: error });
}

function describeBuildFailure(file: string, error: unknown): JetfnError {
  const failure = error as { errors?: esbuild.Message[] };
  const first = failure.errors?.[0];
  if (first) {
    const location = first.location;
    const where = location ? `${path.resolve(location.file)}:${location.line}:${location.column + 1}` : file;
    return new JetfnError("E_FUNCTION_LOAD_FAILED", `${where}: ${first.text}`, { cause: error });
  }
  return new JetfnError("E_FUNCTION_LOAD_FAILED", `${file}: ${(error as Error).message ?? String(error)}`, {
    cause: error,
  });
}

function describeValue(value: unknown): string {
  if (value === null) return "null";
  if (typeof value === "function") return "a function";
  if (typeof value === "object") return "an object without kind: 'jetfn.function'";
  return typeof value;
}
