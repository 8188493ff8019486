import { formatNumber, formatRatio, median } from "./stats";

/** The figures an A/B run compares (jetfn's rows of the job scenarios), in the order shown. */
const SHOWN = [
  "insert-one-row jobs drained",
  "insert-one-row jobs drained: CPU per job, harness Node process",
  "insert-one-row jobs drained: CPU per job, Postgres",
  "insert-one-row jobs drained: CPU per job, NATS server",
  "no-op jobs drained",
  "no-op jobs drained: CPU per job, harness Node process",
  "no-op jobs drained: CPU per job, Postgres",
  "no-op jobs drained: CPU per job, NATS server",
];

/** jetfn's figures of one run, by metric: the value (a one-round run's median) and its unit. */
export type RunFigures = Map<string, { value: number; unit: string }>;

/** One figure of an A/B run: each side's value per round. */
export interface AbRow {
  metric: string;
  unit: string;
  before: number[];
  after: number[];
}

/** jetfn's figures in a benchmark report (`npm run bench -- --out FILE`), read off its results table. */
export function jetfnFigures(markdown: string): RunFigures {
  const figures: RunFigures = new Map();
  for (const line of markdown.split("\n")) {
    // | scenario | metric | contender | median | min-max | better | ratio vs baselines |
    const cells = line.split("|").map((cell) => cell.trim());
    const metric = cells[2] ?? "";
    if (cells.length < 8 || cells[3] !== "jetfn" || !SHOWN.includes(metric)) continue;
    const match = /^(-?[\d,]+(?:\.\d+)?)\s*(.*)$/.exec(cells[4] ?? "");
    if (match) figures.set(metric, { value: Number((match[1] as string).replaceAll(",", "")), unit: match[2] ?? "" });
  }
  return figures;
}

/** The rows of an A/B run, from each side's figures per round (figures no run has are left out). */
export function abRows(before: readonly RunFigures[], after: readonly RunFigures[]): AbRow[] {
  const valuesOf = (runs: readonly RunFigures[], metric: string) =>
    runs.flatMap((run) => {
      const figure = run.get(metric);
      return figure ? [figure.value] : [];
    });
  return SHOWN.flatMap((metric) => {
    const unit = [...before, ...after].find((run) => run.has(metric))?.get(metric)?.unit;
    return unit === undefined
      ? []
      : [{ metric, unit, before: valuesOf(before, metric), after: valuesOf(after, metric) }];
  });
}

/** The A/B table for BENCHMARKS.md: each figure's median and range per side, and after / before. */
export function abTable(rows: readonly AbRow[]): string {
  const side = (values: readonly number[], unit: string) =>
    values.length === 0
      ? "n/a"
      : `${formatNumber(median(values))} ${unit} (${formatNumber(Math.min(...values))}-${formatNumber(Math.max(...values))})`;
  return [
    "| figure | before | after | after / before |",
    "| --- | --- | --- | --- |",
    ...rows.map(
      (row) =>
        `| ${row.metric} | ${side(row.before, row.unit)} | ${side(row.after, row.unit)} | ${formatRatio(median(row.after) / median(row.before))} |`,
    ),
  ].join("\n");
}
