import type { FunctionOverview } from "../inspect/function-overview";
import { formatDuration } from "../support/duration";

/**
 * Failed share of the finished invocations. `served` already counts the failures (it is
 * succeeded + errors), so it is the whole: a function that always fails shows 100.0%.
 */
export function errorRateText(served: number, errors: number): string {
  if (served <= 0) return "–";
  return `${((Math.min(errors, served) / served) * 100).toFixed(1)}%`;
}

/**
 * How long the queue takes to work off at the current rate. Nothing queued shows "–" rather than a
 * "0ms" that reads as a measurement; jobs waiting while none finish show "stalled".
 */
export function drainText(fn: Pick<FunctionOverview, "queued" | "drainMs" | "ratePerSecond">): string {
  if (!fn.queued) return "–";
  // Jobs wait and none finish: said as `jetfn ls` says it, not hidden behind a dash.
  if (fn.ratePerSecond <= 0 || fn.drainMs === null) return "stalled";
  return formatDuration(fn.drainMs);
}
