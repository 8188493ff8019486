import { afterAll, beforeAll, expect, it } from "vitest";
import { createTestEnvironment, eventually, type TestEnvironment } from "../helpers/environment";

// A handler's error is classified by what the runtime saw, not by what the error says: a handler
// that throws the database's or the shared COMMIT's signal, or raises the fence's error code,
// fails its attempt like any other error (retried, then dead), instead of running again forever
// without spending an attempt, or being acknowledged as finished with no record.
let env: TestEnvironment;

beforeAll(async () => {
  env = await createTestEnvironment();
  await env.database.sql.unsafe(`
    create function raise_sqlstate(code text) returns void language plpgsql
      as $$ begin raise exception 'fenced out (not really)' using errcode = code; end $$`);
});

afterAll(async () => {
  await env?.close();
});

it.each(["database", "shared-commit", "fenced"])(
  "counts a handler's forged '%s' failure as a failed attempt",
  { timeout: 90_000 },
  async (forge) => {
    const runtime = await env.startRuntime();
    const starts: string[] = [];
    runtime.events.on("invocation:start", (event) => starts.push(event.invocationId));
    const client = await env.client();
    const job = await client.enqueue("forged-failure", { forge });
    const view = await eventually(async () => {
      const status = await client.status(job.id);
      return status.status === "dead" ? status : undefined;
    }, 30_000).catch(() => client.status(job.id).catch(() => undefined));
    const ran = starts.filter((id) => id === job.id).length;
    await runtime.stop();
    expect({ status: view?.status, attempts: view?.attempts, ran }).toEqual({ status: "dead", attempts: 2, ran: 2 });
  },
);
