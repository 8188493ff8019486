import path from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { createTestEnvironment, eventually, FIXTURE_FUNCTIONS, type TestEnvironment } from "../helpers/environment";

// A job's result is stored as JSON in its record. A handler returning what JSON cannot hold (a
// BigInt, a circular object) or more than a status request can carry back used to have each
// attempt run and then be lost, the job dying of exhausted attempts much later with the error
// logged without its function or invocation. Now the attempt fails at once, for good, as a call's does.
const HOSTILE_FUNCTIONS = path.resolve(FIXTURE_FUNCTIONS, "../hostile-handlers");
let env: TestEnvironment;

beforeAll(async () => {
  env = await createTestEnvironment();
});

afterAll(async () => {
  await env?.close();
});

it.each([
  ["bigint", "E_OUTPUT_INVALID"],
  ["circular", "E_OUTPUT_INVALID"],
  ["huge", "E_PAYLOAD_TOO_LARGE"],
])(
  "fails a job returning a %s result at once, not retried, logged with its invocation",
  {
    timeout: 60_000,
  },
  async (kind, code) => {
    const runtime = await env.startRuntime({ functionsDir: HOSTILE_FUNCTIONS });
    const client = await env.client();
    const job = await client.enqueue("unstorable-result", { kind });
    const view = await eventually(async () => {
      const status = await client.status(job.id);
      return status.status === "dead" || status.status === "succeeded" ? status : undefined;
    }, 20_000).catch(() => client.status(job.id).catch(() => undefined));
    expect({
      status: view?.status,
      attempts: view?.attempts,
      code: (view?.error as { code?: string } | null | undefined)?.code,
    }).toEqual({ status: "dead", attempts: 1, code });
    const dead = runtime.logs.lines.filter((line) => line.code === code);
    expect(dead).toEqual([expect.objectContaining({ fn: "unstorable-result", invocationId: job.id, attempt: 1 })]);
    // Nothing about the job was logged without saying which invocation it was.
    const anonymous = runtime.logs.lines.filter((line) => Number(line.level) >= 50 && line.invocationId === undefined);
    expect(anonymous).toEqual([]);
    // A plain result of the same function is still stored and read back.
    await expect(client.enqueueAndWait("unstorable-result", { kind: "plain" })).resolves.toEqual({ ok: true });
  },
);
