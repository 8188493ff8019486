import type { ResolvedFunction } from "../sdk/define-function";

/** Immutable map of deployed functions by name. Changes return a new registry. */
export interface Registry {
  get(name: string): ResolvedFunction | undefined;
  /** The function deployed from `file`, if any. */
  byFile(file: string): ResolvedFunction | undefined;
  names(): string[];
  all(): ResolvedFunction[];
  readonly size: number;
  with(fn: ResolvedFunction): Registry;
  without(name: string): Registry;
}

/** Creates a registry holding `functions`. */
export function createRegistry(functions: Iterable<ResolvedFunction> = []): Registry {
  return new FrozenRegistry(new Map([...functions].map((fn) => [fn.name, fn])));
}

class FrozenRegistry implements Registry {
  readonly #byName: ReadonlyMap<string, ResolvedFunction>;

  constructor(byName: ReadonlyMap<string, ResolvedFunction>) {
    this.#byName = byName;
  }

  get size(): number {
    return this.#byName.size;
  }

  get(name: string): ResolvedFunction | undefined {
    return this.#byName.get(name);
  }

  byFile(file: string): ResolvedFunction | undefined {
    for (const fn of this.#byName.values()) if (fn.file === file) return fn;
    return undefined;
  }

  names(): string[] {
    return [...this.#byName.keys()].sort();
  }

  all(): ResolvedFunction[] {
    return this.names().map((name) => this.#byName.get(name) as ResolvedFunction);
  }

  with(fn: ResolvedFunction): Registry {
    return new FrozenRegistry(new Map(this.#byName).set(fn.name, fn));
  }

  without(name: string): Registry {
    const next = new Map(this.#byName);
    next.delete(name);
    return new FrozenRegistry(next);
  }
}
