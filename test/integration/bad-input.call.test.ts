import { headers, type Msg } from "@nats-io/transport-node";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Runtime } from "../../runtime/runtime";
import type { JetfnClient } from "../../runtime/sdk/client";
import { createTestEnvironment, type TestEnvironment } from "../helpers/environment";
import type { CapturedLogger } from "../helpers/logs";

// Hostile input on the request-reply path (fn.call.<name>): every message gets a precise error reply,
// and the runtime keeps answering. A small max_payload keeps the oversized cases cheap.
const MAX_PAYLOAD = 65_536;

let env: TestEnvironment;
let runtime: Runtime & { logs: CapturedLogger };
let client: JetfnClient;

beforeAll(async () => {
  env = await createTestEnvironment({ config: `max_payload: ${MAX_PAYLOAD}` });
  runtime = await env.startRuntime();
  client = await env.client();
});

afterAll(async () => {
  await env?.close();
});

interface Answer {
  status: string | undefined;
  body: { error?: { code: string; message: string; issues?: unknown[] }; sum?: number };
}

async function request(subject: string, body: Uint8Array | string): Promise<Answer> {
  const reply: Msg = await runtime.nats.request(subject, body, { timeout: 5_000, headers: headers() });
  return { status: reply.headers?.get("Nats-Service-Error-Code") || undefined, body: reply.json() };
}

function expectInvalidInput(answer: Answer): void {
  expect(answer.status).toBe("400");
  expect(answer.body.error?.code).toBe("E_INPUT_INVALID");
  expect(answer.body.error?.message).toMatch(
    /^input for add (is invalid|is not valid JSON|is not valid UTF-8|is nested deeper)/,
  );
}

describe("bad input on fn.call.<name>", () => {
  it("arbitrary bytes: a 400 E_INPUT_INVALID or, when they happen to be valid, the answer", async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 2_000 }), async (bytes) => {
        const answer = await request("fn.call.add", bytes);
        if (answer.status === undefined) expect(typeof answer.body.sum).toBe("number");
        else expectInvalidInput(answer);
      }),
      { numRuns: 60 },
    );
  });

  it("JSON of the wrong shape: 400 with the issues and their paths", async () => {
    await fc.assert(
      fc.asyncProperty(fc.jsonValue({ maxDepth: 4 }), async (value) => {
        const answer = await request("fn.call.add", JSON.stringify(value));
        if (answer.status === undefined) return;
        expectInvalidInput(answer);
        expect(answer.body.error?.issues?.length).toBeGreaterThan(0);
      }),
      { numRuns: 60 },
    );
  });

  it("non-UTF-8 bytes, huge strings and deep nesting get precise 400s", async () => {
    const notUtf8 = await request("fn.call.add", new Uint8Array([0x7b, 0xff, 0xfe, 0x7d]));
    expect(notUtf8.body.error?.message).toBe("input for add is not valid UTF-8");
    const huge = await request("fn.call.add", JSON.stringify({ a: "x".repeat(60_000), b: 1 }));
    expectInvalidInput(huge);
    expect(huge.body.error?.issues).toEqual([expect.objectContaining({ path: ["a"] })]);
    const depth = 30_000;
    const deep = await request("fn.call.add", `${"[".repeat(depth)}${"]".repeat(depth)}`);
    expect(deep.body.error?.message).toBe("input for add is nested deeper than 512 levels");
    // Even where the schema takes any value (echo): too deep to be answered or stored, so refused.
    const echoed = await request("fn.call.echo", `{"value":${"[".repeat(depth)}${"]".repeat(depth)}}`);
    expect(echoed.status).toBe("400");
    expect(echoed.body.error?.message).toBe("input for echo is nested deeper than 512 levels");
    expect((await request("fn.call.echo", `{"value":${"[".repeat(500)}${"]".repeat(500)}}`)).status).toBeUndefined();
  });

  it("unknown functions and invalid names get 404 E_FUNCTION_NOT_FOUND", async () => {
    const unknown = await request("fn.call.nope", "{}");
    expect(unknown).toEqual({
      status: "404",
      body: { error: { code: "E_FUNCTION_NOT_FOUND", message: 'no function named "nope" is deployed' } },
    });
    // NATS itself answers "no responders" for a subject with an empty token: no subscription matches it.
    await expect(request("fn.call.a..b", "{}")).rejects.toThrow(/no responders/);
    for (const name of ["*", ">", "Add", "add.*", "x.>", "a-b.C"]) {
      const answer = await request(`fn.call.${name}`, "{}");
      expect(answer.status).toBe("404");
      expect(answer.body.error?.message).toContain(`"${name}" is not a valid function name`);
    }
    await fc.assert(
      fc.asyncProperty(fc.string({ minLength: 1, maxLength: 30 }), async (name) => {
        let answer: Answer;
        try {
          answer = await request(`fn.call.${name}`, "{}");
        } catch (error) {
          // The client refuses subjects NATS cannot carry (spaces, empty tokens at the end).
          expect(String(error)).toMatch(/subject|no responders/i);
          return;
        }
        if (answer.status === undefined) return; // a deployed name, found by chance
        expect(["404", "400"]).toContain(answer.status);
      }),
      { numRuns: 60 },
    );
  });

  it("oversized input: jetfn's client says E_PAYLOAD_TOO_LARGE; a plain client is refused before sending", async () => {
    const big = { value: "x".repeat(MAX_PAYLOAD + 1) };
    await expect(client.call("echo", big)).rejects.toMatchObject({ code: "E_PAYLOAD_TOO_LARGE" });
    await expect(client.enqueue("echo", big)).rejects.toMatchObject({ code: "E_PAYLOAD_TOO_LARGE" });
    await expect(runtime.nats.request("fn.call.echo", JSON.stringify(big))).rejects.toThrow(/payload/i);
    // Just below the limit, a result that would not fit comes back as a 413.
    const nearLimit = await request("fn.call.echo", JSON.stringify({ value: "y".repeat(MAX_PAYLOAD - 560) }));
    expect(nearLimit.status).toBe("413");
    expect(nearLimit.body.error?.code).toBe("E_PAYLOAD_TOO_LARGE");
  });

  it("the runtime kept serving and logged no unexpected failure", async () => {
    expect(await client.call("add", { a: 2, b: 3 })).toEqual({ sum: 5 });
    expect(runtime.logs.matching("could not be answered")).toEqual([]);
    expect(runtime.logs.matching("nobody handled it")).toEqual([]);
  });
});
