// `promtool check metrics` must pass on a runtime's whole scrape: jetfn's metrics and Node's process
// metrics. lintMetrics applies promtool's rules without promtool; where promtool is installed
// (Debian's `prometheus` package), the same scrape also goes through it.
import { collectDefaultMetrics, Registry } from "prom-client";
import { afterEach, describe, expect, it } from "vitest";
import { trackInvocationStats } from "../../runtime/invocation/invocation-stats";
import { JetfnError } from "../../runtime/support/errors";
import { createLogger } from "../../runtime/support/logger";
import { createRuntimeMetrics, type RuntimeMetrics } from "../../runtime/support/metrics";
import { createEmitter } from "../../runtime/triggers/events";
import { findPromtool, lintMetrics, promtoolCheck } from "../helpers/metrics-lint";

const promtool = findPromtool();
let metrics: RuntimeMetrics | undefined;

afterEach(() => metrics?.close());

/** A scrape after a call, a failed job and a refused reply, so every jetfn family has samples. */
async function runtimeScrape(): Promise<string> {
  const events = createEmitter();
  metrics = createRuntimeMetrics({
    events,
    stats: trackInvocationStats(events),
    queueDepth: { read: async () => new Map([["add", { pending: 2, ackPending: 1 }]]) },
    logger: createLogger({ level: "silent", format: "json" }),
  });
  const invocation = { fn: "add", invocationId: "a1", attempt: 1, kind: "job" as const };
  events.emit("invocation:start", invocation);
  events.emit("invocation:success", { ...invocation, kind: "call", durationMs: 12 });
  const error = new JetfnError("E_HANDLER_FAILED", "boom");
  events.emit("invocation:failure", { ...invocation, durationMs: 30, error, final: false });
  events.emit("invocation:failure", { ...invocation, attempt: 2, durationMs: 30, error, final: true });
  events.emit("reply:refused", { api: "call", subject: "fn.call.add", reply: "elsewhere" });
  return metrics.registry.metrics();
}

async function defaultScrape(): Promise<string> {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  return registry.metrics();
}

describe("the metrics scrape", () => {
  it("has samples of every jetfn family and Node's process metrics", async () => {
    const text = await runtimeScrape();
    for (const name of [
      "jetfn_invocations_total",
      "jetfn_invocation_errors_total",
      "jetfn_job_retries_total",
      "jetfn_jobs_dead_total",
      "jetfn_invocation_duration_seconds_bucket",
      "jetfn_invocations_in_flight",
      "jetfn_queue_depth",
      "jetfn_queue_ack_pending",
      "jetfn_refused_replies_total",
      "process_cpu_seconds_total",
      "nodejs_active_handles",
    ]) {
      expect(text).toMatch(new RegExp(`^${name}[{ ]`, "m"));
    }
  });

  it("breaks none of promtool's rules", async () => {
    expect(lintMetrics(await runtimeScrape())).toEqual([]);
  });

  it("finds what promtool finds in prom-client's default metrics", async () => {
    expect(lintMetrics(await defaultScrape())).toEqual([
      'nodejs_active_handles_total non-counter metrics should not have "_total" suffix',
      'nodejs_active_requests_total non-counter metrics should not have "_total" suffix',
      'nodejs_active_resources_total non-counter metrics should not have "_total" suffix',
    ]);
    expect(lintMetrics('# TYPE a_count gauge\na_count 1\n# HELP b c\n# TYPE b counter\nb 1\nc{x="1"} oops\n')).toEqual([
      "a_count no help text",
      'a_count non-histogram and non-summary metrics should not have "_count" suffix',
      'b counter metrics should have "_total" suffix',
      'cannot parse the line: c{x="1"} oops',
    ]);
  });

  it.skipIf(promtool === undefined)(
    "passes promtool check metrics (exit 0; prom-client's defaults alone exit 3)",
    async () => {
      expect(promtoolCheck(promtool as string, await runtimeScrape())).toEqual({ status: 0, output: "" });
      expect(promtoolCheck(promtool as string, await defaultScrape()).status).toBe(3);
    },
  );
});
