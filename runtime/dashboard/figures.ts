import type { FunctionOverview } from "../cli/function-overview";
import { formatDuration } from "../duration";

/**
 * Failed share of the finished invocations. `served` already counts the failures (it is
 * succeeded + errors), so it is the whole: a function that always fails shows 100.0%.
 */
export function errorRateText(served: number, errors: number): string {
  if (served <= 0) return "–";
  return `${((Math.min(errors, served) / served) * 100).toFixed(1)}%`;
}

/**
 * How long the queue takes to work off at the current rate. Nothing queued, or no rate to
 * estimate from, shows "–" rather than a "0ms" that reads as a measurement.
 */
export function drainText(fn: Pick<FunctionOverview, "queued" | "drainMs" | "ratePerSecond">): string {
  if (!fn.queued || fn.ratePerSecond <= 0 || fn.drainMs === null) return "–";
  return formatDuration(fn.drainMs);
}
