import { describe, expect, it } from "vitest";
import { createOutboxBackoff, nextSweepDelay } from "../../runtime/outbox/outbox-backoff";

describe("the outbox back-off", () => {
  it("waits 1 s, 2 s, 4 s between refusals and gives a row up at the last attempt", () => {
    const backoff = createOutboxBackoff(4);
    expect(backoff.refused(7, 0)).toBe(false);
    expect(backoff.waiting(999)).toEqual([7]);
    expect(backoff.waiting(1_000)).toEqual([]);
    expect(backoff.refused(7, 1_000)).toBe(false);
    expect(backoff.waiting(2_999)).toEqual([7]);
    expect(backoff.refused(7, 3_000)).toBe(false);
    expect(backoff.waiting(6_999)).toEqual([7]);
    expect(backoff.refused(7, 7_000)).toBe(true);
    expect(backoff.refusals(7)).toBe(4);
  });

  it("forgets published rows, and rows not seen for ten minutes", () => {
    const backoff = createOutboxBackoff(4);
    backoff.refused(1, 0);
    backoff.refused(2, 0);
    backoff.forget(1);
    expect(backoff.refusals(1)).toBe(0);
    expect(backoff.waiting(10 * 60_000 + 1)).toEqual([]);
    expect(backoff.refusals(2)).toBe(0);
  });

  it("doubles the sweep delay while sweeps fail, up to its cap", () => {
    const delays = [1_000];
    for (let step = 0; step < 8; step++) delays.push(nextSweepDelay(delays.at(-1) as number, 1_000, 30_000));
    expect(delays).toEqual([1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000, 30_000]);
  });
});
