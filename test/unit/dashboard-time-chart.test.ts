import { describe, expect, it } from "vitest";
import { timeChart, yScale } from "../../runtime/dashboard/views/time-chart";

describe("the charts' y scale", () => {
  it.each([
    [0, true, { top: 1, step: 1 }],
    [3, true, { top: 3, step: 1 }],
    [5, true, { top: 6, step: 2 }],
    [30, true, { top: 30, step: 10 }],
    [98.02, false, { top: 100, step: 25 }],
    [0.4, false, { top: 0.4, step: 0.1 }],
    [12_345, true, { top: 15_000, step: 5_000 }],
  ])("rounds %s (whole numbers: %s) to %o", (max, whole, expected) => {
    const scale = yScale(max, whole);
    expect(scale.top).toBeCloseTo(expected.top, 9);
    expect(scale.step).toBeCloseTo(expected.step, 9);
  });
});

describe("a time chart", () => {
  const chart = timeChart({
    id: "c",
    title: "t",
    unit: "jobs",
    from: Date.UTC(2026, 11, 6, 13, 0),
    bucketMs: 60_000,
    series: [
      { name: "ok", tone: "s-ok", kind: "bar", values: [1, 0, 4] },
      { name: "<bad>", tone: "s-error", kind: "bar", values: [2, 0, 0] },
    ],
  }).value;

  it("gives each bucket a hover target with its time and every series' value, escaped", () => {
    expect(chart).toContain('data-tip="2026-12-06 13:00:00 UTC + 1 min: ok 1 · &lt;bad&gt; 2"');
    expect(chart).toContain("<title>2026-12-06 13:02:00 UTC + 1 min: ok 4 · &lt;bad&gt; 0</title>");
    expect(chart).not.toContain("<bad>");
  });

  it("labels the time axis in UTC and stacks bars up to a round scale", () => {
    expect(chart).toMatch(/text-anchor="middle">13:00<\/text>/);
    expect(chart).toMatch(/text-anchor="middle">13:01<\/text>/);
    expect(chart).toMatch(/text-anchor="end">4<\/text>/);
    expect(chart.match(/<rect class="s-(ok|error)"/g)).toHaveLength(3);
  });
});
