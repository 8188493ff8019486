import { afterAll, beforeAll, expect, it } from "vitest";
import type { Runtime } from "../../runtime/runtime";
import { runCli } from "../helpers/cli";
import { createTestEnvironment, eventually, type TestEnvironment } from "../helpers/environment";

// An invocation id names one job of one function. A job of another function reusing it is refused
// with E_ID_CONFLICT: it is never answered with the first job's result, never recorded over the
// first job's record, and its waiter exits non-zero.
let env: TestEnvironment;
let runtime: Runtime;
let cliEnv: NodeJS.ProcessEnv;
const refused: { fn: string; invocationId: string; code: string }[] = [];

beforeAll(async () => {
  env = await createTestEnvironment();
  await env.database.sql`create table items (id serial primary key, name text not null, attempt int, invocation text)`;
  runtime = await env.startRuntime({}, { laterTestsUseIt: true });
  runtime.events.on("invocation:failure", (event) => {
    if (event.final) refused.push({ fn: event.fn, invocationId: event.invocationId, code: event.error.code });
  });
  cliEnv = { NATS_URL: env.nats.url };
});

afterAll(async () => {
  await env?.close();
});

async function record(id: string) {
  const [row] = await env.database.sql`select function, status, result from jetfn.invocations where id = ${id}`;
  return row;
}

it.each([
  // The second job touches no table: its success would go to the batched record.
  { first: ["insert-item", '{"name": "order"}'], second: ["echo", '{"value": "bigresult"}'] },
  // The second job writes: its record is written by complete_invocation() in its transaction.
  { first: ["echo", '{"value": "ledger"}'], second: ["insert-item", '{"name": "intruder"}'] },
])(
  "refuses a job of $second.0 reusing the id of a job of $first.0",
  { timeout: 120_000 },
  async ({ first, second }) => {
    const id = `order-${first[0]}-12345`;
    const [firstFn, firstInput] = first as [string, string];
    const [secondFn, secondInput] = second as [string, string];
    const one = await runCli(["enqueue", firstFn, firstInput, "--id", id, "--wait"], cliEnv);
    expect(one.code).toBe(0);
    const before = await record(id);
    expect(before).toMatchObject({ function: firstFn, status: "succeeded" });

    const two = await runCli(["enqueue", secondFn, secondInput, "--id", id, "--wait", "--timeout", "60s"], cliEnv);
    expect({ code: two.code, stdout: two.stdout }).toEqual({ code: 1, stdout: "" });
    expect(two.stderr).toMatch(/^jetfn: E_ID_CONFLICT: /m);

    // The second job was stored and refused, visibly; the first job's record is untouched.
    await eventually(() => refused.find((event) => event.fn === secondFn && event.invocationId === id), 60_000);
    expect(refused.filter((event) => event.invocationId === id)).toEqual([
      { fn: secondFn, invocationId: id, code: "E_ID_CONFLICT" },
    ]);
    expect(await record(id)).toEqual(before);
    const items = await env.database.sql`select name from items where invocation = ${id}`;
    expect(items.map((row) => row.name)).toEqual(firstFn === "insert-item" ? ["order"] : []);
  },
);

it("answers the client's result() for the other function with E_ID_CONFLICT", { timeout: 60_000 }, async () => {
  const client = await env.client();
  const id = "order-client-12345";
  await expect(client.enqueueAndWait("echo", { value: 1 }, { id, timeout: "30s" })).resolves.toMatchObject({
    value: 1,
  });
  await expect(client.result(id, { function: "add", timeout: "5s" })).rejects.toMatchObject({
    code: "E_ID_CONFLICT",
  });
  await expect(client.enqueueAndWait("add", { a: 1, b: 2 }, { id, timeout: "30s" })).rejects.toMatchObject({
    code: "E_ID_CONFLICT",
  });
  expect(await client.result(id, { function: "echo" })).toMatchObject({ value: 1 });
});
