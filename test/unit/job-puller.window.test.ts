import { describe, expect, it } from "vitest";
import { HELD_WINDOWS, jobsToPull, pullWindow, WINDOW_WORK_MS } from "../../runtime/nats/job-puller";

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

describe("jobsToPull", () => {
  it("fills the window of running jobs", () => {
    expect(jobsToPull(256, { outstanding: 0, working: 0, held: 0 })).toBe(256);
    expect(jobsToPull(256, { outstanding: 100, working: 56, held: 56 })).toBe(100);
  });

  it("stops pulling while finished jobs waiting for their records fill the held cap", () => {
    const cap = HELD_WINDOWS * 256;
    expect(jobsToPull(256, { outstanding: 0, working: 0, held: cap })).toBe(0);
    expect(jobsToPull(256, { outstanding: 0, working: 10, held: cap - 100 })).toBe(100);
    expect(jobsToPull(256, { outstanding: 50, working: 10, held: cap - 100 })).toBe(50);
  });
});
