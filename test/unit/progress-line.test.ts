import { describe, expect, it } from "vitest";
import { progressLine } from "../../runtime/cli/progress-line";

describe("progress line", () => {
  it("draws a bar with the count, elapsed time and an estimate of time left", () => {
    expect(progressLine(5, 20, 10_000, 10)).toBe("[###-------] 5/20 25%  10s elapsed, ~30s left");
    expect(progressLine(20, 20, 10_000, 10)).toBe("[##########] 20/20 100%  10s elapsed, ~0ms left");
  });

  it("says what it knows when there is no total or no progress yet", () => {
    expect(progressLine(3, null, 1_500)).toBe("3 done, 1.5s elapsed");
    expect(progressLine(0, 10, 1_000, 4)).toBe("[----] 0/10 0%  1.0s elapsed, time left unknown");
  });
});
