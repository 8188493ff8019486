import { jetstreamManager } from "@nats-io/jetstream";
import { headers } from "@nats-io/transport-node";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Runtime } from "../../runtime/runtime";
import type { JetfnClient } from "../../runtime/sdk/client";
import { createTestEnvironment, eventually, type TestEnvironment } from "../helpers/environment";
import type { CapturedLogger } from "../helpers/logs";

// Hostile input on the fire-and-forget path (fn.job.<name>): each job ends dead with the reason,
// after exactly one delivery (nothing that can never succeed is retried), and the runtime keeps working.

let env: TestEnvironment;
let runtime: Runtime & { logs: CapturedLogger };
let client: JetfnClient;
let counter = 0;

beforeAll(async () => {
  env = await createTestEnvironment({ config: "max_payload: 65536" });
  runtime = await env.startRuntime({ healthCheckInterval: "1s" });
  client = await env.client();
});

afterAll(async () => {
  await env?.close();
});

/** Publishes raw bytes as a job with a known id; resolves once JetStream stored it. */
async function publish(subject: string, body: Uint8Array | string): Promise<string> {
  const id = `bad-input-${process.pid}-${counter++}`;
  const header = headers();
  header.set("Jetfn-Id", id);
  await runtime.nats.request(subject, body, { timeout: 5_000, headers: header });
  return id;
}

async function outcomeOf(id: string) {
  return eventually(async () => {
    const [row] = await env.database.sql<{ status: string; code: string; message: string; attempts: number }[]>`
      select status, error->>'code' as code, error->>'message' as message, attempts
      from jetfn.invocations where id = ${id} and status in ('dead', 'succeeded')`;
    return row;
  }, 15_000);
}

describe("bad input on fn.job.<name>", () => {
  it("arbitrary bytes end dead with E_INPUT_INVALID after one attempt (or succeed when valid)", async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 1_000 }), async (bytes) => {
        const outcome = await outcomeOf(await publish("fn.job.add", bytes));
        if (outcome.status === "succeeded") return;
        expect(outcome).toMatchObject({ status: "dead", code: "E_INPUT_INVALID", attempts: 1 });
        expect(outcome.message).toMatch(/^input for add (is invalid|is not valid JSON|is not valid UTF-8)/);
      }),
      { numRuns: 25 },
    );
  });

  it("wrong types, non-UTF-8, huge strings and deep nesting: dead at once with the reason", async () => {
    const cases: [string | Uint8Array, RegExp][] = [
      ['{"a": "1", "b": []}', /^input for add is invalid: a: /],
      [new Uint8Array([0x7b, 0xc3, 0x28, 0x7d]), /^input for add is not valid UTF-8$/],
      [JSON.stringify({ a: "x".repeat(60_000), b: 1 }), /^input for add is invalid: a: /],
      [`${"[".repeat(30_000)}${"]".repeat(30_000)}`, /^input for add is nested deeper than 512 levels$/],
      ["{oops", /^input for add is not valid JSON/],
    ];
    for (const [body, reason] of cases) {
      const outcome = await outcomeOf(await publish("fn.job.add", body));
      expect(outcome).toMatchObject({ status: "dead", code: "E_INPUT_INVALID", attempts: 1 });
      expect(outcome.message).toMatch(reason);
    }
    const manager = await jetstreamManager(runtime.nats);
    const info = await manager.consumers.info("JETFN_JOBS", "add");
    // One delivery per job: no retry was spent on input that can never succeed.
    expect(info.num_redelivered).toBe(0);
    expect(info.num_ack_pending).toBe(0);
  });

  it("jobs for invalid function names are declared dead with E_FUNCTION_NOT_FOUND and leave the stream", async () => {
    // A subject with an empty token matches no stream: the publisher is told at once ("no responders").
    await expect(publish("fn.job.a..b", "{}")).rejects.toThrow(/no responders/);
    // A space cannot be put in a subject at all: the client refuses it before sending.
    await expect(publish("fn.job.with space", "{}")).rejects.toThrow(/illegal subject/);
    // A wildcard subject is also a pattern: only its literal jobs are removed, never the jobs it matches.
    const subjects = ["fn.job.Upper", "fn.job.*", "fn.job.x.*.y", "fn.job.ok.Not", "fn.job.>"];
    const ids: string[] = [];
    for (const subject of subjects) {
      const id = await publish(subject, '{"n": 1}');
      ids.push(id);
      const outcome = await outcomeOf(id);
      expect(outcome).toMatchObject({ status: "dead", code: "E_FUNCTION_NOT_FOUND" });
      expect(outcome.message).toContain(`job published to ${subject}`);
      expect(outcome.message).toContain("is not a valid function name");
    }
    expect((await client.status(ids[0] as string)).status).toBe("dead");
    const manager = await jetstreamManager(runtime.nats);
    const info = await manager.streams.info("JETFN_JOBS", { subjects_filter: "fn.job.>" });
    for (const subject of subjects) expect(info.state.subjects?.[subject]).toBeUndefined();
  });

  it("jobs for a valid name that is not deployed wait in the stream and are reported", async () => {
    const id = await publish("fn.job.not-deployed-yet", "{}");
    await eventually(() => runtime.logs.matching("wait for function not-deployed-yet").length > 0, 15_000);
    const [row] = await env.database.sql`select status, error from jetfn.invocations where id = ${id}`;
    expect(row).toBeUndefined();
    const manager = await jetstreamManager(runtime.nats);
    const info = await manager.streams.info("JETFN_JOBS", { subjects_filter: "fn.job.not-deployed-yet" });
    expect(info.state.subjects?.["fn.job.not-deployed-yet"]).toBe(1);
  });

  it("the runtime kept working and logged no unexpected failure", async () => {
    expect(await client.call("add", { a: 2, b: 3 })).toEqual({ sum: 5 });
    expect(runtime.logs.matching("could not be handled")).toEqual([]);
    expect(runtime.logs.matching("nobody handled it")).toEqual([]);
  });
});
