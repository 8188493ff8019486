import { expect, it } from "vitest";
import { abRows, abTable, jetfnFigures } from "../../bench/ab-figures";

const report = (insert: string, node: string, noop: string) => `
| scenario | metric | contender | median | min-max | better | ratio vs baselines |
| --- | --- | --- | --- | --- | --- | --- |
| 2. Fire-and-forget, no-op jobs | no-op jobs drained | BullMQ | 26,376 jobs/s | 22,362-29,557 | higher | baseline |
| 2. Fire-and-forget, no-op jobs | no-op jobs drained | jetfn | ${noop} jobs/s |  | higher |  |
| 3. Fire-and-forget, one (audited) row per job | insert-one-row jobs drained | jetfn | ${insert} jobs/s |  | higher |  |
| 3. Fire-and-forget, one (audited) row per job | insert-one-row jobs drained: CPU per job, harness Node process | jetfn | ${node} µs |  | lower |  |
| 3. Fire-and-forget, one (audited) row per job | insert-one-row jobs drained: all cores busy | jetfn | 84.9 % |  | lower |  |
`;

it("reads jetfn's job figures from a report, and leaves out other contenders and figures", () => {
  const figures = jetfnFigures(report("2,938", "319", "21,610"));
  expect([...figures.keys()]).toEqual([
    "no-op jobs drained",
    "insert-one-row jobs drained",
    "insert-one-row jobs drained: CPU per job, harness Node process",
  ]);
  expect(figures.get("insert-one-row jobs drained")).toMatchObject({ value: 2938, unit: "jobs/s" });
  expect(figures.get("insert-one-row jobs drained: CPU per job, harness Node process")).toMatchObject({
    value: 319,
    unit: "µs",
  });
});

it("tables each figure's medians, ranges and ratio, inserts first", () => {
  const before = [report("2,900", "320", "21,000"), report("3,000", "330", "22,000"), report("2,800", "310", "20,000")];
  const after = [report("3,500", "270", "21,500"), report("3,400", "260", "21,000"), report("3,600", "280", "22,000")];
  const table = abTable(abRows(before.map(jetfnFigures), after.map(jetfnFigures)));
  expect(table.split("\n")).toEqual([
    "| figure | before | after | after / before |",
    "| --- | --- | --- | --- |",
    "| insert-one-row jobs drained | 2,900 jobs/s (2,800-3,000) | 3,500 jobs/s (3,400-3,600) | 1.21x |",
    "| insert-one-row jobs drained: CPU per job, harness Node process | 320 µs (310-330) | 270 µs (260-280) | 0.84x |",
    "| no-op jobs drained | 21,000 jobs/s (20,000-22,000) | 21,500 jobs/s (21,000-22,000) | 1.02x |",
  ]);
});
