import { describe, expect, it } from "vitest";
import { formatDuration, formatElapsed, parseDuration, toNanos } from "../../runtime/support/duration";

describe("durations", () => {
  it.each([
    ["250ms", 250],
    ["30s", 30_000],
    ["1.5s", 1_500],
    ["5m", 300_000],
    ["1h", 3_600_000],
    ["7d", 604_800_000],
    [1234, 1234],
  ])("parses %s", (input, ms) => {
    expect(parseDuration(input)).toBe(ms);
  });

  it.each(["", "5", "5 minutes", "-1s", "1w", "abc"])("refuses %j with a message showing the format", (input) => {
    expect(() => parseDuration(input)).toThrow(/is not a duration; write it like "500ms"/);
  });

  it("refuses negative and non-finite numbers", () => {
    expect(() => parseDuration(-1)).toThrow(TypeError);
    expect(() => parseDuration(Number.POSITIVE_INFINITY)).toThrow(TypeError);
  });

  it("formats for people and converts for JetStream", () => {
    expect(formatDuration(450)).toBe("450ms");
    expect(formatDuration(2_500)).toBe("2.5s");
    expect(formatDuration(90_000)).toBe("1m30s");
    expect(formatDuration(90_061_000)).toBe("1d1h");
    expect(toNanos(1_500)).toBe(1_500_000_000);
  });

  it("formats the time between two ISO times, when both are known", () => {
    expect(formatElapsed("2026-12-07T15:45:18.221Z", "2026-12-07T15:45:18.228Z")).toBe("7ms");
    expect(formatElapsed("2026-12-07T15:44:00.000Z", "2026-12-07T15:45:30.000Z")).toBe("1m30s");
    expect(formatElapsed(null, "2026-12-07T15:45:18.228Z")).toBeUndefined();
    expect(formatElapsed("2026-12-07T15:45:18.221Z", undefined)).toBeUndefined();
  });
});
