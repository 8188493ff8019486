/** Caps how many invocations of one function run at once in this process. */
export interface Limiter {
  readonly active: number;
  readonly waiting: number;
  /** Changing it takes effect for the next acquire; running invocations are not interrupted. */
  capacity: number;
  /**
   * Resolves with a release function once a slot is free; rejects if `signal` aborts first. Waiters
   * with a higher `priority` (a job's, 0-3) are granted before lower ones, in order within one.
   */
  acquire(signal?: AbortSignal, priority?: number): Promise<() => void>;
  /**
   * A slot now, when one is free and nobody waits (what acquire() would grant at once), without
   * a promise or an await; undefined otherwise.
   */
  tryAcquire?(): (() => void) | undefined;
}

/** Creates a limiter with `capacity` slots. */
export function createLimiter(capacity: number): Limiter {
  return new SlotLimiter(capacity);
}

class SlotLimiter implements Limiter {
  #capacity: number;
  #active = 0;
  readonly #queue: (() => void)[] = [];
  /** Priority of each waiter in #queue, kept only once a prioritised waiter came (see #enqueue). */
  #priorities: number[] | undefined;

  constructor(capacity: number) {
    this.#capacity = capacity;
  }

  get active(): number {
    return this.#active;
  }

  get waiting(): number {
    return this.#queue.length;
  }

  get capacity(): number {
    return this.#capacity;
  }

  set capacity(value: number) {
    this.#capacity = value;
    this.#wake();
  }

  acquire(signal?: AbortSignal, priority = 0): Promise<() => void> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    // A free slot and nobody ahead: no waiting, so no abort listener to add and remove.
    const free = this.tryAcquire();
    if (free) return Promise.resolve(free);
    return new Promise((resolve, reject) => {
      const grant = (): void => {
        signal?.removeEventListener("abort", onAbort);
        resolve(this.#take());
      };
      const onAbort = (): void => {
        const index = this.#queue.indexOf(grant);
        if (index >= 0) {
          this.#queue.splice(index, 1);
          this.#priorities?.splice(index, 1);
        }
        reject(signal?.reason);
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      this.#enqueue(grant, priority);
      this.#wake();
    });
  }

  tryAcquire(): (() => void) | undefined {
    return this.#active < this.#capacity && this.#queue.length === 0 ? this.#take() : undefined;
  }

  /** Occupies a slot; returns the function that frees it (once). */
  #take(): () => void {
    this.#active++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#active--;
      this.#wake();
    };
  }

  /** Queues a waiter behind those of its priority or higher; all-default queues stay plain arrays. */
  #enqueue(grant: () => void, priority: number): void {
    if (priority === 0 && this.#priorities === undefined) {
      this.#queue.push(grant);
      return;
    }
    this.#priorities ??= this.#queue.map(() => 0);
    let index = this.#queue.length;
    while (index > 0 && (this.#priorities[index - 1] as number) < priority) index--;
    this.#queue.splice(index, 0, grant);
    this.#priorities.splice(index, 0, priority);
  }

  #wake(): void {
    while (this.#active < this.#capacity && this.#queue.length > 0) {
      this.#priorities?.shift();
      (this.#queue.shift() as () => void)();
    }
    if (this.#queue.length === 0) this.#priorities = undefined;
  }
}
