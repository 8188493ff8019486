import { afterEach, describe, expect, it, vi } from "vitest";
import { isoAt, isoNow } from "../../runtime/support/clock";

describe("isoNow", () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it("is the current time as toISOString writes it", () => {
    vi.useFakeTimers({ now: new Date("2026-11-29T09:15:02.123Z") });
    expect(isoNow()).toBe("2026-11-29T09:15:02.123Z");
  });

  it("follows the clock from one millisecond to the next", () => {
    vi.useFakeTimers({ now: new Date("2026-11-29T09:15:02.123Z") });
    expect(isoNow()).toBe("2026-11-29T09:15:02.123Z");
    vi.advanceTimersByTime(1);
    expect(isoNow()).toBe("2026-11-29T09:15:02.124Z");
    vi.setSystemTime(new Date("2027-01-01T00:00:00.000Z"));
    expect(isoNow()).toBe("2027-01-01T00:00:00.000Z");
  });

  it("matches the real clock", () => {
    const before = Date.now();
    const now = Date.parse(isoNow());
    expect(now).toBeGreaterThanOrEqual(before);
    expect(now).toBeLessThanOrEqual(Date.now());
  });
});

describe("isoAt", () => {
  it("writes a time as toISOString does, for the same and for other milliseconds in turn", () => {
    for (const ms of [0, 1_764_000_000_123, 1_764_000_000_123, 1_764_000_000_124, 1_000, 1_764_000_000_123]) {
      expect(isoAt(ms)).toBe(new Date(ms).toISOString());
    }
  });
});
