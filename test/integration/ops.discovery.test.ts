import type { Msg } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ServiceInfo, ServicePing, ServiceStats } from "../../runtime/nats/service-discovery";
import type { Runtime } from "../../runtime/runtime";
import type { JetfnClient } from "../../runtime/sdk/client";
import { createTestEnvironment, eventually, type TestEnvironment } from "../helpers/environment";
import { freePort } from "../helpers/free-port";
import type { CapturedLogger } from "../helpers/logs";

let env: TestEnvironment;
let client: JetfnClient;
let runtime: Runtime & { logs: CapturedLogger };
let metricsPort: number;

beforeAll(async () => {
  env = await createTestEnvironment();
  metricsPort = await freePort();
  runtime = await env.startRuntime({ metricsPort });
  client = await env.client();
});

afterAll(async () => {
  await env?.close();
});

/** Every reply to a services-protocol request within a short window. */
async function gather<T>(subject: string): Promise<T[]> {
  const replies: T[] = [];
  try {
    const messages = await client.connection.requestMany(subject, "", {
      strategy: "stall",
      stall: 200,
      maxWait: 2_000,
    });
    for await (const message of messages as AsyncIterable<Msg>) replies.push(message.json<T>());
  } catch (error) {
    if (!/no responders/i.test((error as Error).message)) throw error;
  }
  return replies;
}

const SEMVER = /^\d+\.\d+\.\d+/;
const BASIC_NAME = /^[a-zA-Z0-9_-]+$/;

describe("the NATS services protocol", () => {
  it("$SRV.PING answers with a ping_response, also by name and by id", async () => {
    const [ping] = await gather<ServicePing>("$SRV.PING");
    expect(ping).toMatchObject({ type: "io.nats.micro.v1.ping_response", name: "jetfn", id: expect.any(String) });
    expect(ping?.version).toMatch(SEMVER);
    expect(await gather<ServicePing>("$SRV.PING.jetfn")).toHaveLength(1);
    expect(await gather<ServicePing>(`$SRV.PING.jetfn.${ping?.id}`)).toHaveLength(1);
    expect(await gather<ServicePing>("$SRV.PING.jetfn.someone-else")).toHaveLength(0);
  });

  it("$SRV.INFO lists one endpoint per deployed function on fn.call.<name>", async () => {
    const [info] = await gather<ServiceInfo>("$SRV.INFO.jetfn");
    expect(info).toMatchObject({
      type: "io.nats.micro.v1.info_response",
      name: "jetfn",
      description: expect.any(String),
    });
    const subjects = info?.endpoints.map((endpoint) => endpoint.subject).sort();
    expect(subjects).toEqual(
      runtime.registry
        .names()
        .map((name) => `fn.call.${name}`)
        .sort(),
    );
    for (const endpoint of info?.endpoints ?? []) {
      expect(endpoint.name).toMatch(BASIC_NAME);
      expect(endpoint.queue_group).toBe("jetfn");
    }
  });

  it("$SRV.STATS counts requests, errors and durations, with jetfn's extras in data", async () => {
    await client.call("add", { a: 1, b: 2 });
    await expect(client.call("add", { a: "x", b: 2 })).rejects.toMatchObject({ code: "E_INPUT_INVALID" });
    const job = await client.enqueue("boom", { reason: "stats" });
    await client.result(job.id).catch(() => undefined);
    const stats = await eventually(async () => {
      const [reply] = await gather<ServiceStats>("$SRV.STATS.jetfn");
      const boom = reply?.endpoints.find((endpoint) => endpoint.subject === "fn.call.boom");
      return boom?.data.dead === 1 ? reply : undefined;
    });
    expect(stats).toMatchObject({
      type: "io.nats.micro.v1.stats_response",
      name: "jetfn",
      started: expect.any(String),
    });
    expect(Number.isNaN(Date.parse(stats.started))).toBe(false);
    const add = stats.endpoints.find((endpoint) => endpoint.subject === "fn.call.add");
    expect(add).toMatchObject({
      name: "add",
      queue_group: "jetfn",
      num_requests: 2,
      num_errors: 1,
      last_error: expect.stringContaining("E_INPUT_INVALID"),
      data: {
        function: "add",
        calls: 2,
        jobs: 0,
        succeeded: 1,
        errors: { invalid_input: 1, handler_error: 0, timeout: 0, non_retryable: 0 },
        in_flight: 0,
        completed_last_minute: 2,
        process: { pid: process.pid, calls_served: expect.any(Number), rss_bytes: expect.any(Number) },
      },
    });
    expect(Number.isInteger(add?.processing_time)).toBe(true);
    expect(add?.processing_time).toBeGreaterThan(0);
    expect(add?.average_processing_time).toBe(Math.round((add?.processing_time ?? 0) / 2));
    expect(add?.data.duration_ms).toMatchObject({ count: 2, mean: expect.any(Number), median: expect.any(Number) });
    const boom = stats.endpoints.find((endpoint) => endpoint.subject === "fn.call.boom");
    expect(boom?.data).toMatchObject({ jobs: 1, dead: 1, errors: { handler_error: 1 }, queue: { pending: 0 } });
  });
});

describe("the Prometheus endpoint", () => {
  it("exposes invocation and error counters, duration histograms and queue depth on 127.0.0.1", async () => {
    await client.call("add", { a: 2, b: 2 });
    const response = await fetch(`http://127.0.0.1:${metricsPort}/metrics`);
    expect(response.status).toBe(200);
    const text = await response.text();
    expect(text).toMatch(/jetfn_invocations_total\{fn="add",kind="call",outcome="succeeded"\} [1-9]/);
    expect(text).toMatch(
      /jetfn_invocation_errors_total\{fn="add",error_kind="invalid_input",code="E_INPUT_INVALID"\} 1/,
    );
    expect(text).toMatch(/jetfn_jobs_dead_total\{fn="boom"\} 1/);
    expect(text).toMatch(/jetfn_invocation_duration_seconds_bucket\{le="0\.1",fn="add",kind="call"\} [1-9]/);
    expect(text).toMatch(/jetfn_queue_depth\{fn="add"\} 0/);
    // The dead job may still count as ack-pending until the ack wait passes (nats-server 2.9 ignores a TERM with a reason).
    expect(text).toMatch(/jetfn_queue_ack_pending\{fn="boom"\} [01]\n/);
    expect(text).toContain("process_resident_memory_bytes");
    expect((await fetch(`http://127.0.0.1:${metricsPort}/other`)).status).toBe(404);
  });

  it("refuses a metrics port that is taken, naming it", async () => {
    await expect(env.startRuntime({ metricsPort })).rejects.toMatchObject({
      code: "E_CONFIG_INVALID",
      message: expect.stringContaining(`metrics port ${metricsPort}`),
    });
  });
});
