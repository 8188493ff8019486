// Builds the package into dist/ (run by `npm run build` and before `npm pack`): the CLI and runtime,
// the `jetfn`, `jetfn/client` and `jetfn/testing` entries, the worker-thread script, and their types.
import { execFileSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import * as esbuild from "esbuild";
import { HANDLER_THREAD_BUILD } from "../runtime/isolation/thread-script";
import { DEV_DEPENDENCIES } from "../runtime/support/dev-dependencies";

const ROOT = path.resolve(import.meta.dirname, "..");
const DIST = path.join(ROOT, "dist");
const TYPES = path.join(DIST, "types");

/**
 * Packages bundled into dist instead of loaded from the app's node_modules. postgres.js carries
 * fixes (patches/postgres+*.patch, applied to this repository's node_modules) that a dependency
 * installed next to jetfn would not have; its licence (the Unlicense) allows shipping it.
 */
const BUNDLED = new Set(["postgres"]);

function externalPackages(): string[] {
  const manifest = JSON.parse(readFileSync(path.join(ROOT, "package.json"), "utf8")) as {
    dependencies: Record<string, string>;
  };
  // What only `jetfn dev` uses comes from the app's node_modules when the app installed it, or not at all.
  return [...Object.keys(manifest.dependencies), ...Object.keys(DEV_DEPENDENCIES)]
    .filter((name) => !BUNDLED.has(name))
    .flatMap((name) => [name, `${name}/*`]);
}

async function buildModules(): Promise<void> {
  await esbuild.build({
    entryPoints: {
      cli: "runtime/cli/main.ts",
      index: "runtime/index.ts",
      client: "runtime/client-api.ts",
      testing: "runtime/testing/index.ts",
      "internal/postgres-driver": "scripts/postgres-driver.ts",
    },
    absWorkingDir: ROOT,
    outdir: DIST,
    chunkNames: "chunks/[name]-[hash]",
    bundle: true,
    // One copy of each module across the entries, so `jetfn` and `jetfn/client` share error classes.
    splitting: true,
    format: "esm",
    platform: "node",
    target: "node20",
    external: externalPackages(),
    sourcemap: true,
    logLevel: "warning",
  });
}

async function buildHandlerThread(): Promise<void> {
  await esbuild.build({
    ...HANDLER_THREAD_BUILD,
    absWorkingDir: ROOT,
    entryPoints: ["runtime/isolation/handler-thread.ts"],
    outfile: path.join(DIST, "handler-thread.js"),
    logLevel: "warning",
  });
}

function buildTypes(): void {
  const tsc = path.join(ROOT, "node_modules", "typescript", "bin", "tsc");
  execFileSync(process.execPath, [tsc, "-p", "tsconfig.build.json"], { cwd: ROOT, stdio: "inherit" });
  for (const file of declarationFiles(TYPES)) addExtensions(file);
}

function declarationFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const full = path.join(dir, name);
    if (statSync(full).isDirectory()) return declarationFiles(full);
    return name.endsWith(".d.ts") ? [full] : [];
  });
}

/**
 * The sources import siblings without an extension (bundler resolution); an app compiling with
 * `"moduleResolution": "nodenext"` needs them spelled out in the declarations it reads.
 */
function addExtensions(file: string): void {
  const text = readFileSync(file, "utf8");
  const fixed = text.replace(/((?:from |import\()\s*")(\.{1,2}\/[^"]*)(")/g, (whole, before, specifier, after) => {
    const target = path.resolve(path.dirname(file), specifier);
    if (existsSync(`${target}.d.ts`)) return `${before}${specifier}.js${after}`;
    if (existsSync(path.join(target, "index.d.ts"))) return `${before}${specifier}/index.js${after}`;
    return whole;
  });
  if (fixed !== text) writeFileSync(file, fixed);
}

rmSync(DIST, { recursive: true, force: true });
await Promise.all([buildModules(), buildHandlerThread()]);
buildTypes();
process.stdout.write(`built ${path.relative(process.cwd(), DIST) || "."}\n`);
