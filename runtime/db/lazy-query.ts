/** How a query's rows come back: as objects, or as arrays of values. */
export type QueryMode = "rows" | "values";

/**
 * A query that runs when first awaited, as a postgres.js query does; `.values()` asks for rows as
 * arrays. drizzle builds on this shape, on the main thread (the invocation's transaction) and in a
 * worker thread (queries relayed to it).
 */
export class LazyQuery implements PromiseLike<unknown> {
  readonly #run: (mode: QueryMode) => Promise<unknown>;
  #mode: QueryMode = "rows";
  #promise: Promise<unknown> | undefined;

  constructor(run: (mode: QueryMode) => Promise<unknown>) {
    this.#run = run;
  }

  values(): this {
    this.#mode = "values";
    return this;
  }

  // biome-ignore lint/suspicious/noThenProperty: drizzle awaits this object like a postgres.js query.
  then<A = unknown, B = never>(
    onFulfilled?: ((value: unknown) => A | PromiseLike<A>) | null,
    onRejected?: ((reason: unknown) => B | PromiseLike<B>) | null,
  ): Promise<A | B> {
    this.#promise ??= this.#run(this.#mode);
    return this.#promise.then(onFulfilled, onRejected);
  }

  catch<B = never>(onRejected?: ((reason: unknown) => B | PromiseLike<B>) | null): Promise<unknown> {
    return this.then(undefined, onRejected);
  }
}
