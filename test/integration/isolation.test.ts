import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { JetfnClient } from "../../runtime/client";
import type { Runtime } from "../../runtime/runtime";
import { createTestEnvironment, eventually, FIXTURE_FUNCTIONS, type TestEnvironment } from "../helpers/environment";
import type { CapturedLogger } from "../helpers/logs";

const ISOLATED_FUNCTIONS = path.resolve(FIXTURE_FUNCTIONS, "../isolated-functions");

let env: TestEnvironment;
let client: JetfnClient;
let runtime: Runtime & { logs: CapturedLogger };

beforeAll(async () => {
  env = await createTestEnvironment();
  await env.database.sql`create table items (id serial primary key, name text not null, attempt int, invocation text)`;
  await env.database
    .sql`create table fault_rows (id bigserial primary key, n int not null, invocation text not null, attempt int not null)`;
  runtime = await env.startRuntime({ functionsDir: ISOLATED_FUNCTIONS });
  client = await env.client();
}, 60_000);

afterAll(async () => {
  await env?.close();
});

describe("isolation: thread", () => {
  it("smoke", async () => {
    const result = await client.call("add-isolated", { a: 1, b: 2 });
    expect(result).toEqual({ sum: 3 });
    const job = await client.enqueue("insert-isolated", { name: "first" });
    const view = await eventually(async () => {
      const v = await client.status(job.id);
      return ["succeeded", "dead"].includes(v.status) ? v : undefined;
    });
    console.log(
      JSON.stringify(view),
      runtime.logs.lines.filter((l) => l.level >= 40),
    );
  });
});
