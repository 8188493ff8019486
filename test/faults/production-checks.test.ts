import { jetstreamManager } from "@nats-io/jetstream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isOlderVersion } from "../../runtime/nats/server-check";
import type { Runtime } from "../../runtime/runtime";
import type { JetfnClient } from "../../runtime/sdk/client";
import { createTestEnvironment, eventually, type TestEnvironment } from "../helpers/environment";
import type { CapturedLogger } from "../helpers/logs";

// Start-up warnings about the NATS deployment, and the stall watch (consumer:stalled).

let env: TestEnvironment;
let runtime: Runtime & { logs: CapturedLogger };
let client: JetfnClient;

beforeAll(async () => {
  env = await createTestEnvironment();
  runtime = await env.startRuntime({ healthCheckInterval: "500ms" });
  client = await env.client();
});

afterAll(async () => {
  await env?.close();
});

describe("production checks", () => {
  it("compares versions numerically", () => {
    expect(isOlderVersion("2.9.10", "2.10.23")).toBe(true);
    expect(isOlderVersion("2.10.22", "2.10.23")).toBe(true);
    expect(isOlderVersion("2.10.23", "2.10.23")).toBe(false);
    expect(isOlderVersion("2.11.0-RC.1", "2.10.23")).toBe(false);
  });

  it("warns at start-up about the server version and the stream's replicas", async () => {
    const warnings = await eventually(() => {
      const found = runtime.logs.matching("Production check:");
      return found.length >= 2 ? found : undefined;
    });
    const version = runtime.nats.info?.version as string;
    const byCheck = Object.fromEntries(warnings.map((line) => [line.check, String(line.msg)]));
    if (isOlderVersion(version, "2.10.23"))
      expect(byCheck.version).toContain(`nats-server ${version} is older than 2.10.23`);
    expect(byCheck.replicas).toContain("stream JETFN_JOBS has 1 replica(s)");
    expect(byCheck.replicas).toContain("sync_interval: always");
    expect(warnings.every((line) => line.level === 40)).toBe(true);
  });

  it("reports a consumer whose max ack pending is reached (consumer:stalled)", async () => {
    const stalls: { fn: string; reason: string }[] = [];
    runtime.events.on("consumer:stalled", (event) => stalls.push(event));
    const manager = await jetstreamManager(runtime.nats);
    await manager.consumers.update("JETFN_JOBS", "fault-hang", { max_ack_pending: 1 });
    for (let index = 0; index < 3; index++) await client.enqueue("fault-hang", {});
    const stall = await eventually(() => stalls.find((event) => event.fn === "fault-hang"), 15_000);
    expect(stall.reason).toMatch(/^max ack pending \(1\) reached with \d+ job\(s\) waiting$/);
    expect(runtime.logs.matching("The consumer of fault-hang stalled")).not.toHaveLength(0);
  });
});
