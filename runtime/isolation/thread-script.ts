import { createHash } from "node:crypto";
import { access, rename, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type * as esbuild from "esbuild";
import { PACKAGE_ROOT } from "../support/package-root";

const ENTRY = fileURLToPath(new URL("./handler-thread.ts", import.meta.url));

/** The compiled package ships the script, built with the same options when the package is built. */
const RUNNING_FROM_SOURCES = import.meta.url.endsWith(".ts");
const SHIPPED_SCRIPT = path.join(PACKAGE_ROOT, "dist", "handler-thread.js");

// Bundled packages that load Node built-ins with require() need one in an ES module.
const REQUIRE_SHIM =
  'import { createRequire as __jetfnCreateRequire } from "node:module"; const require = __jetfnCreateRequire(import.meta.url);';

/** How the worker-thread script is bundled: handler-thread.ts and all it imports, one ES module. */
export const HANDLER_THREAD_BUILD: esbuild.BuildOptions = {
  bundle: true,
  format: "esm",
  platform: "node",
  target: "node20",
  logLevel: "silent",
  banner: { js: REQUIRE_SHIM },
};

let script: Promise<string> | undefined;

/**
 * The file worker threads start from: handler-thread.ts and everything it imports (the public API,
 * zod, drizzle, pino) bundled into one ES module, built once per process and kept in the temporary
 * folder under a name derived from its content. One file parses in a few hundred milliseconds;
 * loading the TypeScript sources through tsx's hooks in each thread took seconds.
 */
export function handlerThreadScript(): Promise<string> {
  if (!RUNNING_FROM_SOURCES) return Promise.resolve(SHIPPED_SCRIPT);
  script ??= buildScript().catch((error: unknown) => {
    script = undefined;
    throw error;
  });
  return script;
}

async function buildScript(): Promise<string> {
  const esbuild = await import("esbuild");
  const result = await esbuild.build({ ...HANDLER_THREAD_BUILD, entryPoints: [ENTRY], write: false });
  const code = result.outputFiles[0]?.text ?? "";
  const hash = createHash("sha256").update(code).digest("hex").slice(0, 16);
  const file = path.join(tmpdir(), `jetfn-handler-thread-${hash}.mjs`);
  const exists = await access(file).then(
    () => true,
    () => false,
  );
  if (!exists) {
    // Written aside, then renamed: another runtime starting at the same time never reads half a file.
    const partial = `${file}.${process.pid}.partial`;
    await writeFile(partial, code);
    await rename(partial, file);
  }
  return file;
}
