// The Prometheus files in deploy/production/ that docs/production.md refers to: every metric the
// alerts name is one a runtime serves, and, where promtool is installed, the config and rules are
// valid and the alerts' own unit tests pass.
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import { trackInvocationStats } from "../../runtime/invocation/invocation-stats";
import { createLogger } from "../../runtime/support/logger";
import { createRuntimeMetrics, type RuntimeMetrics } from "../../runtime/support/metrics";
import { createEmitter } from "../../runtime/triggers/events";
import { findPromtool } from "../helpers/metrics-lint";

const DEPLOY = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../deploy/production");
const promtool = findPromtool();
let metrics: RuntimeMetrics | undefined;

afterEach(() => metrics?.close());

/** Names of the metric families a runtime serves. */
async function servedMetrics(): Promise<Set<string>> {
  const events = createEmitter();
  metrics = createRuntimeMetrics({
    events,
    stats: trackInvocationStats(events),
    queueDepth: { read: async () => new Map() },
    logger: createLogger({ level: "silent", format: "json" }),
  });
  const text = await metrics.registry.metrics();
  return new Set([...text.matchAll(/^# TYPE (\S+)/gm)].map((match) => match[1] as string));
}

function promtoolRun(...args: string[]): string {
  return execFileSync(promtool as string, args, { cwd: DEPLOY, encoding: "utf8", stdio: "pipe" });
}

describe("deploy/production/jetfn-alerts.yml", () => {
  it("names only metrics a runtime serves", async () => {
    const rules = readFileSync(path.join(DEPLOY, "jetfn-alerts.yml"), "utf8");
    const named = [
      ...new Set([...rules.matchAll(/\b((?:jetfn|nodejs|process)_[a-z0-9_]+)/g)].map((m) => m[1] as string)),
    ];
    expect(named.length).toBeGreaterThan(4);
    const served = await servedMetrics();
    expect(named.filter((name) => !served.has(name))).toEqual([]);
  });

  it.skipIf(promtool === undefined)("passes promtool check rules and its unit tests", () => {
    expect(promtoolRun("check", "rules", "jetfn-alerts.yml")).toContain("SUCCESS");
    expect(promtoolRun("test", "rules", "jetfn-alerts.test.yml")).toContain("SUCCESS");
  });
});

describe("deploy/production/prometheus.yml", () => {
  it.skipIf(promtool === undefined)("passes promtool check config", () => {
    expect(promtoolRun("check", "config", "prometheus.yml")).toContain("is valid prometheus config file syntax");
  });
});
