import { statSync } from "node:fs";
import { readdir, stat } from "node:fs/promises";
import path from "node:path";
import { type FSWatcher, watch } from "chokidar";
import type { Logger } from "pino";
import { type ResolvedFunction, resolveFunction } from "../sdk/define-function";
import { JetfnError, toJetfnError } from "../support/errors";
import type { RuntimeEmitter } from "../triggers/events";
import { describeInvalidName, functionNameFromPath, isFunctionFile, isValidFunctionName } from "./function-name";
import { type LoadResult, loadFunctionFile, loadFunctionFiles } from "./loader";
import { createRegistry, type Registry } from "./registry";

/** What one deploy step changed. */
export interface DeploymentChange {
  added: ResolvedFunction[];
  updated: { previous: ResolvedFunction; next: ResolvedFunction }[];
  removed: ResolvedFunction[];
}

/** Options of the deployer. */
export interface DeployerOptions {
  functionsDir: string;
  /** Redeploy on file changes. */
  watch: boolean;
  logger: Logger;
  events: RuntimeEmitter;
  /** Coalesces bursts of writes to one file. @default 25 */
  debounceMs?: number;
  /** Longest a file's top-level code may run when it is loaded. @default DEFAULT_LOAD_TIMEOUT_MS */
  loadTimeoutMs?: number;
}

/** Keeps the registry in step with the files of the functions folder. */
export interface Deployer {
  readonly registry: Registry;
  /** Deploys every file, then starts watching if asked to. */
  start(): Promise<DeploymentChange>;
  /** Called after each change, before it is visible to new invocations' lookups. */
  onChange(listener: (change: DeploymentChange) => Promise<void> | void): void;
  /** Resolves when every pending file event has been applied. */
  settled(): Promise<void>;
  close(): Promise<void>;
}

/** Creates a deployer for `options.functionsDir`. */
export function createDeployer(options: DeployerOptions): Deployer {
  return new FolderDeployer(options);
}

let nextVersion = 1;
const VERIFY_AFTER_MS = 100;

class FolderDeployer implements Deployer {
  #registry: Registry = createRegistry();
  readonly #options: DeployerOptions;
  readonly #listeners: ((change: DeploymentChange) => Promise<void> | void)[] = [];
  /** Local files each function file was built from, to redeploy when a helper changes. */
  readonly #dependencies = new Map<string, Set<string>>();
  readonly #timers = new Map<string, NodeJS.Timeout>();
  #queue: Promise<void> = Promise.resolve();
  #watcher: FSWatcher | undefined;

  constructor(options: DeployerOptions) {
    this.#options = options;
  }

  get registry(): Registry {
    return this.#registry;
  }

  onChange(listener: (change: DeploymentChange) => Promise<void> | void): void {
    this.#listeners.push(listener);
  }

  async start(): Promise<DeploymentChange> {
    const root = this.#options.functionsDir;
    const files = await listFunctionFiles(root);
    const results = await loadFunctionFiles(files, { timeoutMs: this.#options.loadTimeoutMs });
    const change: DeploymentChange = { added: [], updated: [], removed: [] };
    for (const result of results) this.#apply(result, change);
    await this.#publish(change);
    if (this.#options.watch) await this.#startWatching();
    return change;
  }

  settled(): Promise<void> {
    return new Promise((resolve) => {
      const check = (): void => {
        if (this.#timers.size > 0) {
          setTimeout(check, 5);
          return;
        }
        const queued = this.#queue;
        void queued.then(() => (queued === this.#queue ? resolve() : check()));
      };
      check();
    });
  }

  async close(): Promise<void> {
    for (const timer of this.#timers.values()) clearTimeout(timer);
    this.#timers.clear();
    await this.#watcher?.close();
    await this.#queue;
  }

  async #startWatching(): Promise<void> {
    // awaitWriteFinish: report a file once its size has settled, not halfway through a save.
    const watcher = watch(this.#options.functionsDir, {
      ignoreInitial: true,
      awaitWriteFinish: { stabilityThreshold: 20, pollInterval: 10 },
    });
    this.#watcher = watcher;
    watcher.on("add", (file) => this.#schedule(path.resolve(file)));
    watcher.on("change", (file) => this.#schedule(path.resolve(file)));
    watcher.on("unlink", (file) => this.#schedule(path.resolve(file)));
    watcher.on("error", (error) => this.#options.logger.error({ err: error }, "Watching the functions folder failed."));
    for (const dependency of this.#externalDependencies()) watcher.add(dependency);
    await new Promise<void>((resolve) => watcher.once("ready", () => resolve()));
  }

  #schedule(file: string): void {
    clearTimeout(this.#timers.get(file));
    const timer = setTimeout(() => {
      this.#timers.delete(file);
      this.#queue = this.#queue
        .then(() => this.#reload(file))
        .catch((error: unknown) => {
          this.#options.logger.error({ err: error, file }, "Redeploy failed unexpectedly.");
        });
    }, this.#options.debounceMs ?? 25);
    this.#timers.set(file, timer);
  }

  async #reload(changed: string): Promise<void> {
    const root = this.#options.functionsDir;
    const targets = new Set<string>();
    if (isFunctionFile(root, changed)) targets.add(changed);
    for (const [file, dependencies] of this.#dependencies) if (dependencies.has(changed)) targets.add(file);
    const change: DeploymentChange = { added: [], updated: [], removed: [] };
    for (const file of targets) {
      const stamp = await fileStamp(file);
      if (stamp) {
        this.#apply(await loadFunctionFile(file, { timeoutMs: this.#options.loadTimeoutMs }), change);
        this.#verifyLater(file, stamp);
      } else this.#remove(file, change);
    }
    await this.#publish(change);
    for (const dependency of this.#externalDependencies()) this.#watcher?.add(dependency);
  }

  /**
   * The watcher drops events that come too close together (chokidar throttles per file), so a
   * second save right after the first could go unseen. Look again shortly after each load.
   */
  #verifyLater(file: string, loadedStamp: string): void {
    const timer = setTimeout(() => {
      void fileStamp(file).then((stamp) => {
        if (stamp !== loadedStamp && !this.#timers.has(file)) this.#schedule(file);
      });
    }, VERIFY_AFTER_MS);
    timer.unref();
  }

  #apply(result: LoadResult, change: DeploymentChange): void {
    const { file } = result;
    this.#dependencies.set(file, new Set(result.dependencies));
    const name = functionNameFromPath(this.#options.functionsDir, file);
    const previous = this.#registry.byFile(file);
    try {
      if (!isValidFunctionName(name))
        throw new JetfnError("E_FUNCTION_INVALID", `${file}: ${describeInvalidName(name)}`);
      if (!result.ok) throw result.error;
      const holder = this.#registry.get(name);
      if (holder && holder.file !== file) {
        throw new JetfnError("E_FUNCTION_INVALID", `${file}: function ${name} is already deployed from ${holder.file}`);
      }
      const next = resolveFunction(
        name,
        file,
        nextVersion++,
        result.definition,
        writtenAt([file, ...result.dependencies]),
      );
      this.#registry = this.#registry.with(next);
      if (previous) change.updated.push({ previous, next });
      else change.added.push(next);
      this.#options.events.emit("function:loaded", { fn: name, file, version: next.version, replaced: !!previous });
    } catch (thrown) {
      const error = toJetfnError(thrown);
      this.#options.logger.error(
        { file, code: error.code, kept: previous ? previous.version : undefined },
        previous ? `${error.message} (version ${previous.version} keeps running)` : error.message,
      );
      this.#options.events.emit("function:failed", { file, error });
    }
  }

  #remove(file: string, change: DeploymentChange): void {
    this.#dependencies.delete(file);
    const previous = this.#registry.byFile(file);
    if (!previous) return;
    this.#registry = this.#registry.without(previous.name);
    change.removed.push(previous);
    this.#options.events.emit("function:removed", { fn: previous.name, file });
  }

  async #publish(change: DeploymentChange): Promise<void> {
    if (change.added.length + change.updated.length + change.removed.length === 0) return;
    for (const listener of this.#listeners) await listener(change);
  }

  #externalDependencies(): string[] {
    const root = this.#options.functionsDir;
    const all = new Set<string>();
    for (const dependencies of this.#dependencies.values()) {
      for (const dependency of dependencies) if (path.relative(root, dependency).startsWith("..")) all.add(dependency);
    }
    return [...all];
  }
}

/** Every deployable file under `root`, recursively, sorted. A missing folder holds no functions. */
export async function listFunctionFiles(root: string): Promise<string[]> {
  const entries = await readdir(root, { recursive: true, withFileTypes: true }).catch(
    (error: NodeJS.ErrnoException) => {
      if (error.code === "ENOENT") return [];
      throw error;
    },
  );
  return entries
    .filter((entry) => entry.isFile())
    .map((entry) => path.join(entry.parentPath ?? (entry as unknown as { path: string }).path, entry.name))
    .filter((file) => isFunctionFile(root, file))
    .sort();
}

/**
 * The newest modification time of `files`, whole milliseconds (0 if none can be read): when a
 * definition was written, compared across runtimes of different versions.
 */
function writtenAt(files: readonly string[]): number {
  let newest = 0;
  for (const file of new Set(files)) {
    try {
      newest = Math.max(newest, Math.floor(statSync(file).mtimeMs));
    } catch {
      // A dependency gone since the build adds nothing.
    }
  }
  return newest;
}

/** Identifies a file's current content cheaply; undefined once it is gone. */
function fileStamp(file: string): Promise<string | undefined> {
  return stat(file).then(
    (stats) => `${stats.ino}:${stats.size}:${stats.mtimeMs}`,
    () => undefined,
  );
}
