import { jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { headers as natsHeaders } from "@nats-io/transport-node";
import { afterAll, beforeAll, expect, it } from "vitest";
import { createTestEnvironment, eventually, type TestEnvironment } from "../helpers/environment";

// Debounce and singleton keys, debounce periods and priorities come from clients. A client that
// skips the client library's checks and sends its own request to jetfn.api.enqueue must get a
// clear E_INPUT_INVALID for each bad value, and nothing may be stored: no job, no delayed job, no
// claim in the keys bucket.

let env: TestEnvironment;

beforeAll(async () => {
  env = await createTestEnvironment();
  await env.database.sql`create table items (id serial primary key, name text not null, attempt int, invocation text)`;
});

afterAll(async () => {
  await env?.close();
});

const BAD_REQUESTS: { name: string; headers: Record<string, string>; error: RegExp }[] = [
  { name: "a key of 129 characters", headers: { "Jetfn-Singleton-Key": "k".repeat(129) }, error: /singleton key/ },
  { name: "an empty key", headers: { "Jetfn-Singleton-Key": "" }, error: /singleton key/ },
  { name: "a key with a space", headers: { "Jetfn-Singleton-Key": "a b" }, error: /singleton key/ },
  { name: "a key with a wildcard", headers: { "Jetfn-Singleton-Key": "tenant.>" }, error: /singleton key/ },
  { name: "a key with a wildcard token", headers: { "Jetfn-Singleton-Key": "*" }, error: /singleton key/ },
  { name: "a key with non-ASCII", headers: { "Jetfn-Singleton-Key": "ключ" }, error: /singleton key/ },
  {
    name: "a debounce without a period",
    headers: { "Jetfn-Debounce-Key": "k" },
    error: /debounce period/,
  },
  {
    name: "a debounce period of 0",
    headers: { "Jetfn-Debounce-Key": "k", "Jetfn-Debounce-Period": "0" },
    error: /between 100ms and 24h/,
  },
  {
    name: "a debounce period of a year",
    headers: { "Jetfn-Debounce-Key": "k", "Jetfn-Debounce-Period": "31536000000" },
    error: /between 100ms and 24h/,
  },
  {
    name: "a debounce period in words",
    headers: { "Jetfn-Debounce-Key": "k", "Jetfn-Debounce-Period": "forever" },
    error: /debounce period/,
  },
  {
    name: "a debounced job with a due time",
    headers: { "Jetfn-Debounce-Key": "k", "Jetfn-Debounce-Period": "1000", "Jetfn-Not-Before": "99999999999999" },
    error: /no delay/,
  },
  {
    name: "both keys",
    headers: { "Jetfn-Debounce-Key": "k", "Jetfn-Debounce-Period": "1000", "Jetfn-Singleton-Key": "k" },
    error: /either a singleton key or a debounce key/,
  },
  { name: "no key at all", headers: {}, error: /either a singleton key or a debounce key/ },
  { name: "a priority of 4", headers: { "Jetfn-Singleton-Key": "k", "Jetfn-Priority": "4" }, error: /priority/ },
  { name: "a negative priority", headers: { "Jetfn-Singleton-Key": "k", "Jetfn-Priority": "-1" }, error: /priority/ },
  {
    name: "a fractional priority",
    headers: { "Jetfn-Singleton-Key": "k", "Jetfn-Priority": "1.5" },
    error: /priority/,
  },
  { name: "a due time in words", headers: { "Jetfn-Singleton-Key": "k", "Jetfn-Not-Before": "soon" }, error: /epoch/ },
  {
    name: "an id shaped like the runtime's own",
    headers: { "Jetfn-Singleton-Key": "k", "Jetfn-Id": "0f8fad5b-d9cb-869f-a165-70867728950e" },
    error: /not shaped like the ids jetfn derives/,
  },
];

it("refuses every bad key, period and priority with E_INPUT_INVALID and stores nothing", async () => {
  const runtime = await env.startRuntime();
  const nc = runtime.nats;
  const manager = await jetstreamManager(nc);
  const stored = async () =>
    (await manager.streams.info("JETFN_JOBS")).state.messages +
    (await manager.streams.info("JETFN_JOBS_DELAYED")).state.messages;
  const before = await stored();
  for (const request of BAD_REQUESTS) {
    const header = natsHeaders();
    header.set("Jetfn-Function", "insert-item");
    for (const [key, value] of Object.entries(request.headers)) header.set(key, value);
    const reply = await nc.request("jetfn.api.enqueue", JSON.stringify({ name: "evil" }), {
      headers: header,
      timeout: 5_000,
    });
    expect(reply.headers?.get("Nats-Service-Error-Code"), request.name).toBe("400");
    const body = reply.json<{ error: { code: string; message: string } }>();
    expect(body.error.code, request.name).toBe("E_INPUT_INVALID");
    expect(body.error.message, request.name).toMatch(request.error);
  }
  expect(await stored()).toBe(before);
  const keys = await new Kvm(nc).open("JETFN_JOB_KEYS");
  expect((await keys.status()).values).toBe(0);
});

it("refuses a body that is not JSON, or nested too deep, before claiming anything", async () => {
  const runtime = await env.startRuntime();
  const header = natsHeaders();
  header.set("Jetfn-Function", "insert-item");
  header.set("Jetfn-Singleton-Key", "k");
  for (const body of ["{not json", `${"[".repeat(2_000)}${"]".repeat(2_000)}`]) {
    const reply = await runtime.nats.request("jetfn.api.enqueue", body, { headers: header, timeout: 5_000 });
    expect(reply.json<{ error: { code: string } }>().error.code).toBe("E_INPUT_INVALID");
  }
  const keys = await new Kvm(runtime.nats).open("JETFN_JOB_KEYS");
  expect((await keys.status()).values).toBe(0);
});

it("never runs a job published to a priority-shaped subject with a level that does not exist", async () => {
  const runtime = await env.startRuntime({ healthCheckInterval: "1s" });
  await runtime.nats.request("fn.job.insert-item.P9", JSON.stringify({ name: "p9" }), { timeout: 5_000 });
  const dead = await eventually(async () => {
    const [row] = await env.database.sql<{ status: string }[]>`
      select status from jetfn.invocations where function = 'insert-item.P9'`;
    return row;
  }, 30_000);
  expect(dead.status).toBe("dead");
  expect(await env.database.sql`select 1 from items where name = 'p9'`).toHaveLength(0);
});
