import { describe, expect, it } from "vitest";
import { pullWindow, WINDOW_WORK_MS } from "../../runtime/nats/job-puller";

describe("pullWindow", () => {
  it("holds twice the concurrency before any handler has run, and for handlers of 10 ms or more", () => {
    expect(pullWindow(8, undefined)).toBe(16);
    expect(pullWindow(8, WINDOW_WORK_MS / 2)).toBe(16);
    expect(pullWindow(8, 5_000)).toBe(16);
  });

  it("holds about WINDOW_WORK_MS of work per slot for quicker handlers, at most 32 jobs per slot", () => {
    expect(pullWindow(8, 2)).toBe(8 * Math.ceil(WINDOW_WORK_MS / 2));
    expect(pullWindow(8, 0.01)).toBe(8 * 32);
    expect(pullWindow(4, 0)).toBe(4 * 32);
  });

  it("never holds nothing", () => {
    expect(pullWindow(0, undefined)).toBe(2);
  });
});
