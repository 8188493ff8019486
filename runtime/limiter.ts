/** Caps how many invocations of one function run at once in this process. */
export interface Limiter {
  readonly active: number;
  readonly waiting: number;
  /** Changing it takes effect for the next acquire; running invocations are not interrupted. */
  capacity: number;
  /** Resolves with a release function once a slot is free; rejects if `signal` aborts first. */
  acquire(signal?: AbortSignal): Promise<() => void>;
}

/** Creates a limiter with `capacity` slots. */
export function createLimiter(capacity: number): Limiter {
  return new SlotLimiter(capacity);
}

class SlotLimiter implements Limiter {
  #capacity: number;
  #active = 0;
  readonly #queue: (() => void)[] = [];

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

  acquire(signal?: AbortSignal): Promise<() => void> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    // A free slot and nobody ahead: no waiting, so no abort listener to add and remove.
    if (this.#active < this.#capacity && this.#queue.length === 0) return Promise.resolve(this.#take());
    return new Promise((resolve, reject) => {
      const grant = (): void => {
        signal?.removeEventListener("abort", onAbort);
        resolve(this.#take());
      };
      const onAbort = (): void => {
        const index = this.#queue.indexOf(grant);
        if (index >= 0) this.#queue.splice(index, 1);
        reject(signal?.reason);
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      this.#queue.push(grant);
      this.#wake();
    });
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

  #wake(): void {
    while (this.#active < this.#capacity && this.#queue.length > 0) (this.#queue.shift() as () => void)();
  }
}
