import { describe, expect, it } from "vitest";
import { createLimiter } from "../../runtime/invocation/limiter";

describe("limiter", () => {
  it("grants up to its capacity, then queues in order", async () => {
    const limiter = createLimiter(2);
    const first = await limiter.acquire();
    await limiter.acquire();
    const order: number[] = [];
    const third = limiter.acquire().then((release) => {
      order.push(3);
      return release;
    });
    const fourth = limiter.acquire().then(() => order.push(4));
    expect(limiter.active).toBe(2);
    expect(limiter.waiting).toBe(2);
    first();
    (await third)();
    await fourth;
    expect(order).toEqual([3, 4]);
  });

  it("tryAcquire takes a free slot at once, and none while full or while others wait", async () => {
    const limiter = createLimiter(1);
    const release = limiter.tryAcquire?.();
    expect(release).toBeTypeOf("function");
    expect(limiter.active).toBe(1);
    expect(limiter.tryAcquire?.()).toBeUndefined();
    const waiter = limiter.acquire();
    release?.();
    // The slot went to the waiter, first in line.
    const waiterRelease = await waiter;
    expect(limiter.tryAcquire?.()).toBeUndefined();
    waiterRelease();
    expect(limiter.active).toBe(0);
    expect(limiter.tryAcquire?.()).toBeTypeOf("function");
  });

  it("ignores a second release of the same slot", async () => {
    const limiter = createLimiter(1);
    const release = await limiter.acquire();
    release();
    release();
    expect(limiter.active).toBe(0);
  });

  it("grows and shrinks with a redeploy", async () => {
    const limiter = createLimiter(1);
    await limiter.acquire();
    const waiting = limiter.acquire();
    limiter.capacity = 2;
    await waiting;
    expect(limiter.active).toBe(2);
  });

  it("rejects waiters when the signal aborts", async () => {
    const limiter = createLimiter(1);
    await limiter.acquire();
    const controller = new AbortController();
    const waiting = limiter.acquire(controller.signal);
    controller.abort(new Error("shutting down"));
    await expect(waiting).rejects.toThrow("shutting down");
    expect(limiter.waiting).toBe(0);
  });
});
