import { connect, headers, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { JetfnClient } from "../../runtime/sdk/client";
import type { JetfnError } from "../../runtime/support/errors";
import { createTestEnvironment, type TestEnvironment } from "../helpers/environment";

let env: TestEnvironment;
let client: JetfnClient;
let plain: NatsConnection;

beforeAll(async () => {
  env = await createTestEnvironment();
  await env.database.sql`create table items (id serial primary key, name text not null, attempt int, invocation text)`;
  await env.startRuntime();
  client = await env.client();
  plain = await connect({ servers: env.nats.url });
});

afterAll(async () => {
  await plain?.close();
  await env?.close();
});

async function callError(name: string, input: unknown): Promise<JetfnError & { status: number }> {
  try {
    await client.call(name, input);
  } catch (error) {
    return error as JetfnError & { status: number };
  }
  throw new Error(`call ${name} succeeded but was expected to fail`);
}

describe("request-reply on fn.call.<name>", () => {
  it("returns the handler's result, validated by the output schema", async () => {
    await expect(client.call("add", { a: 2, b: 40 })).resolves.toEqual({ sum: 42 });
  });

  it("answers 400 with the zod issues for invalid input", async () => {
    const error = await callError("add", { a: "two", b: 40 });
    expect(error.status).toBe(400);
    expect(error.code).toBe("E_INPUT_INVALID");
    expect(error.issues).toEqual([expect.objectContaining({ path: ["a"], code: "invalid_type" })]);
  });

  it("answers 404 for a function that is not deployed", async () => {
    const error = await callError("does-not-exist", {});
    expect(error.status).toBe(404);
    expect(error.code).toBe("E_FUNCTION_NOT_FOUND");
    expect(error.message).toContain("does-not-exist");
  });

  it("answers 408 when the handler outlives its timeout", async () => {
    const started = Date.now();
    const error = await callError("sleep", { ms: 3_000 });
    expect(error.status).toBe(408);
    expect(error.code).toBe("E_HANDLER_TIMEOUT");
    expect(Date.now() - started).toBeLessThan(2_500);
  });

  it("answers 500 with the handler's message when it throws", async () => {
    const error = await callError("boom", { reason: "disk on fire" });
    expect(error.status).toBe(500);
    expect(error.code).toBe("E_HANDLER_FAILED");
    expect(error.message).toBe("boom: disk on fire");
  });

  it("answers 500 E_OUTPUT_INVALID when the result breaks the output schema", async () => {
    const error = await callError("wrong-output", {});
    expect(error.status).toBe(500);
    expect(error.code).toBe("E_OUTPUT_INVALID");
  });

  it("commits the handler's writes and returns; a handler that swallows a failed statement fails", async () => {
    const error = await callError("swallow-db-error", {});
    expect(error.code).toBe("E_HANDLER_FAILED");
    expect(error.message).toContain("rolled the transaction back");
    const rows = await env.database.sql`select count(*)::int as n from items where name = 'swallowed'`;
    expect(rows[0]?.n).toBe(0);
  });

  it("rolls back a failed nested transaction to its savepoint and keeps the rest", async () => {
    await client.call("nested-transaction", { name: "nest" });
    const rows = await env.database.sql`select name from items where name like 'nest-%' order by name`;
    expect(rows.map((row) => row.name)).toEqual(["nest-kept", "nest-outer"]);
  });

  it("serves a plain NATS client: JSON in, JSON out, error headers on failure", async () => {
    const ok = await plain.request("fn.call.add", JSON.stringify({ a: 1, b: 2 }), { timeout: 5_000 });
    expect(ok.headers?.get("Nats-Service-Error-Code") ?? "").toBe("");
    expect(ok.json()).toEqual({ sum: 3 });

    const bad = await plain.request("fn.call.add", "{not json", { timeout: 5_000 });
    expect(bad.headers?.get("Nats-Service-Error-Code")).toBe("400");
    expect(bad.headers?.get("Nats-Service-Error")).toContain("not valid JSON");
    expect(bad.json()).toEqual({
      error: { code: "E_INPUT_INVALID", message: expect.stringContaining("not valid JSON") },
    });

    const missing = await plain.request("fn.call.nope", "{}", { timeout: 5_000 });
    expect(missing.headers?.get("Nats-Service-Error-Code")).toBe("404");
  });

  it("accepts an empty body for an input of optional fields, and echoes the caller's invocation id", async () => {
    const header = headers();
    header.set("Jetfn-Id", "call-id-12345678");
    const reply = await plain.request("fn.call.echo", "", { timeout: 5_000, headers: header });
    expect(reply.json()).toEqual({ value: null, invocationId: "call-id-12345678", attempt: 1 });
    expect(reply.headers?.get("Jetfn-Id")).toBe("call-id-12345678");
  });
});
