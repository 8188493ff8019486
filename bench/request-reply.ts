import type { NatsConnection } from "@nats-io/transport-node";
import { createClient } from "../runtime/sdk/client";
import { createFunctionsFolder, noopFunctionSource, startBenchRuntime } from "./jetfn-host";
import type { RoundContext, Scenario } from "./model";
import { quantile, rotate, runPool } from "./stats";

const P50 = "call latency p50 (1 requester)";
const P99 = "call latency p99 (1 requester)";
const THROUGHPUT = "calls/s, 64 in flight";
const RAW = "raw nats.js responder";
const RAW_SUBJECT = "bench.call.noop";
const FUNCTION = "rr-noop";

type Requester = () => Promise<unknown>;

/** 1. Request-reply: `client.call` of a no-op function vs a raw nats.js v3 responder. */
export const requestReplyScenario: Scenario = {
  id: "request-reply",
  title: "1. Request-reply",
  baselines: { [P50]: [RAW], [P99]: [RAW], [THROUGHPUT]: [RAW] },
  targets: [
    {
      scenario: "request-reply",
      metric: P50,
      contender: "jetfn",
      kind: "ratio",
      baselines: [RAW],
      max: 1.3,
      reason: "a call should cost little more than a bare NATS request",
    },
    {
      scenario: "request-reply",
      metric: THROUGHPUT,
      contender: "jetfn",
      kind: "ratio",
      baselines: [RAW],
      min: 0.8,
      reason: "calls in flight should keep most of bare NATS's throughput",
    },
  ],
  async run(context) {
    const { services } = context;
    const database = await services.jetfnDatabase("jetfn_rr");
    const folder = await createFunctionsFolder({ [FUNCTION]: noopFunctionSource(64) });
    const runtime = await startBenchRuntime({
      natsUrl: services.natsUrl,
      databaseUrl: database.url,
      functionsDir: folder.dir,
    });
    const responder = await services.connectNats("raw-responder");
    responder.subscribe(RAW_SUBJECT, {
      queue: "raw",
      callback: (error, message) => {
        if (!error) message.respond("null");
      },
    });
    await responder.flush();
    const requester: NatsConnection = await services.connectNats("bench-requester");
    const client = await createClient({ connection: requester });
    try {
      const contenders: Array<[string, Requester]> = [
        ["jetfn", () => client.call(FUNCTION, {})],
        [RAW, () => requester.request(RAW_SUBJECT, "{}", { timeout: 5_000 })],
      ];
      for (const [name, request] of rotate(contenders, context.round)) await measure(context, name, request);
    } finally {
      await client.close();
      await requester.close();
      await responder.close();
      await runtime.stop();
      await database.drop();
      await folder.remove();
    }
  },
};

async function measure(context: RoundContext, contender: string, request: Requester): Promise<void> {
  const { sequentialCalls, pipelinedCalls, callsInFlight } = context.sizes;
  for (let warm = 0; warm < Math.min(200, sequentialCalls); warm++) await request();
  const latencies: number[] = [];
  for (let index = 0; index < sequentialCalls; index++) {
    const started = performance.now();
    await request();
    latencies.push((performance.now() - started) * 1000);
  }
  context.record({ metric: P50, contender, unit: "µs", better: "lower", value: quantile(latencies, 0.5) });
  context.record({ metric: P99, contender, unit: "µs", better: "lower", value: quantile(latencies, 0.99) });
  const started = performance.now();
  await runPool(pipelinedCalls, callsInFlight, request);
  const seconds = (performance.now() - started) / 1000;
  context.record({ metric: THROUGHPUT, contender, unit: "calls/s", better: "higher", value: pipelinedCalls / seconds });
}
