import { describe, expect, it } from "vitest";
import { drainText, errorRateText } from "../../runtime/dashboard/figures";
import { safeNext } from "../../runtime/dashboard/sign-in";
import { timeCell } from "../../runtime/dashboard/time-format";

describe("the dashboard's figures", () => {
  it("counts the error rate over served, which already counts the failures", () => {
    expect(errorRateText(4, 4)).toBe("100.0%");
    expect(errorRateText(4, 1)).toBe("25.0%");
    expect(errorRateText(10, 0)).toBe("0.0%");
    expect(errorRateText(0, 0)).toBe("–");
  });

  it("shows no time to drain when nothing is queued or there is no rate", () => {
    expect(drainText({ queued: 0, drainMs: 0, ratePerSecond: 2 })).toBe("–");
    expect(drainText({ queued: 5, drainMs: null, ratePerSecond: 0 })).toBe("stalled");
    expect(drainText({ queued: null, drainMs: null, ratePerSecond: 1 })).toBe("–");
    expect(drainText({ queued: 10, drainMs: 5_000, ratePerSecond: 2 })).toBe("5.0s");
  });

  it("writes every time one way, the ISO time in a tooltip", () => {
    expect(timeCell("2026-12-06 13:01:39.123456+00").value).toBe(
      '<time datetime="2026-12-06T13:01:39.123Z" title="2026-12-06T13:01:39.123Z">2026-12-06 13:01:39 UTC</time>',
    );
    expect(timeCell(null).value).toBe("–");
    expect(timeCell("not a time").value).toBe("not a time");
  });

  it("returns from sign-in only to a path of the dashboard", () => {
    expect(safeNext("/dead-letters?function=boom")).toBe("/dead-letters?function=boom");
    for (const away of ["//evil.example", "https://evil.example/", "/\\evil.example", "javascript:alert(1)"]) {
      expect(safeNext(away)).toBe("/");
    }
    expect(safeNext(undefined)).toBe("/");
  });
});
