import { JetfnError } from "../support/errors";

/** A window the charts can show, and how it is cut into bars. */
export interface ChartRange {
  /** As written in the URL: `15m`, `1h`, `24h`. */
  readonly name: string;
  readonly label: string;
  readonly spanMs: number;
  /** Width of one bar (a bucket of the query). */
  readonly bucketMs: number;
  /** How often the page asks for fresh figures: about one bucket, never under 5 s. */
  readonly refreshMs: number;
}

/** The ranges offered, shortest first; each is cut into 60-96 buckets, enough to read and to hover. */
export const CHART_RANGES: readonly ChartRange[] = Object.freeze([
  { name: "15m", label: "15 min", spanMs: 15 * 60_000, bucketMs: 15_000, refreshMs: 5_000 },
  { name: "1h", label: "1 h", spanMs: 3_600_000, bucketMs: 60_000, refreshMs: 10_000 },
  { name: "24h", label: "24 h", spanMs: 24 * 3_600_000, bucketMs: 15 * 60_000, refreshMs: 60_000 },
]);

/** The range shown when the URL names none. */
const DEFAULT_CHART_RANGE = CHART_RANGES[1] as ChartRange;

/** The range `?range=` names (the default when absent); E_INPUT_INVALID for any other text. */
export function chartRangeOf(url: URL): ChartRange {
  const name = url.searchParams.get("range")?.trim();
  if (!name) return DEFAULT_CHART_RANGE;
  const range = CHART_RANGES.find((candidate) => candidate.name === name);
  if (!range) {
    const offered = CHART_RANGES.map((candidate) => candidate.name).join(", ");
    throw new JetfnError("E_INPUT_INVALID", `range "${name}" is none of ${offered}`);
  }
  return range;
}
