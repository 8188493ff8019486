import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

/**
 * The folder holding jetfn's package.json: the repository in development, `node_modules/jetfn`
 * where jetfn is installed. Files shipped beside the code (migrations, nats.conf, the worker-thread
 * script) are found from here, because a module's own location differs between the TypeScript
 * sources (`runtime/cli/x.ts`) and the compiled bundle (`dist/chunks/x.js`).
 */
export const PACKAGE_ROOT = findPackageRoot(path.dirname(fileURLToPath(import.meta.url)));

/** jetfn's version, from its package.json. */
export const PACKAGE_VERSION = (
  JSON.parse(readFileSync(path.join(PACKAGE_ROOT, "package.json"), "utf8")) as { version: string }
).version;

function findPackageRoot(start: string): string {
  for (let dir = start; ; dir = path.dirname(dir)) {
    const manifest = path.join(dir, "package.json");
    if (existsSync(manifest) && (JSON.parse(readFileSync(manifest, "utf8")) as { name?: string }).name === "jetfn") {
      return dir;
    }
    if (path.dirname(dir) === dir) throw new Error(`jetfn: no package.json named jetfn above ${start}`);
  }
}
