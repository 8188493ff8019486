import { jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Runtime } from "../../runtime/runtime";
import type { JetfnClient } from "../../runtime/sdk/client";
import { createClient } from "../../runtime/sdk/client";
import { createTestEnvironment, type TestEnvironment } from "../helpers/environment";
import { CLIENT_PASSWORD, shippedNatsAuth } from "../helpers/shipped-nats-auth";

// The shipped nats.auth.conf (listen address and store come from the test server's flags): a client
// user can publish jobs, call, read status and wait for done notices, and is
// refused everything that would let it consume, delete or impersonate.
let env: TestEnvironment;
let runtime: Runtime;
let client: JetfnClient;
let raw: NatsConnection;
const asyncErrors: string[] = [];

beforeAll(async () => {
  env = await createTestEnvironment(await shippedNatsAuth());
  await env.database.sql`create table items (id serial primary key, name text not null, attempt int, invocation text)`;
  runtime = await env.startRuntime();
  client = await createClient({ natsUrl: env.nats.url, natsUser: "jetfn-client", natsPassword: CLIENT_PASSWORD });
  raw = await connect({ servers: env.nats.url, user: "jetfn-client", pass: CLIENT_PASSWORD });
  void (async () => {
    for await (const status of raw.status()) if (status.type === "error") asyncErrors.push(String(status.error));
  })();
});

afterAll(async () => {
  await client?.close();
  await raw?.close();
  await env?.close();
});

describe("nats.auth.conf", () => {
  it("lets the client user call, enqueue, read status and wait for the result", async () => {
    expect(await client.call("add", { a: 1, b: 2 })).toEqual({ sum: 3 });
    const job = await client.enqueue("insert-quick", { name: "from-client-user" });
    await client.result(job.id, { timeout: "15s" });
    expect((await client.status(job.id)).status).toBe("succeeded");
  });

  it("lets the client user enqueue with a priority, a singleton key and a debounce key", async () => {
    const urgent = await client.enqueue("insert-quick", { name: "urgent-from-client-user" }, { priority: 3 });
    const single = await client.enqueue("insert-quick", { name: "single" }, { singleton: { key: "client-user" } });
    const debounced = await client.enqueue(
      "insert-quick",
      { name: "later" },
      { debounce: { key: "c", period: "100ms" } },
    );
    for (const job of [urgent, single, debounced]) await client.result(job.id, { timeout: "15s" });
  });

  it("refuses the client user's JetStream API requests: no consuming, reading or deleting the stream", async () => {
    const refused = [
      "$JS.API.INFO",
      "$JS.API.STREAM.DELETE.JETFN_JOBS",
      "$JS.API.STREAM.PURGE.JETFN_JOBS",
      "$JS.API.STREAM.MSG.GET.JETFN_JOBS",
      "$JS.API.CONSUMER.CREATE.JETFN_JOBS",
      "$JS.API.CONSUMER.DURABLE.CREATE.JETFN_JOBS.thief",
      "$JS.API.CONSUMER.MSG.NEXT.JETFN_JOBS.add",
      "$JS.API.CONSUMER.DELETE.JETFN_JOBS.add",
    ];
    for (const subject of refused) {
      await expect(raw.request(subject, "{}", { timeout: 2_000 }), subject).rejects.toThrow(/Permissions Violation/);
    }
    await expect(jetstreamManager(raw)).rejects.toThrow(/Permissions Violation/);
    const manager = await jetstreamManager(runtime.nats);
    expect((await manager.streams.info("JETFN_JOBS")).config.name).toBe("JETFN_JOBS");
  });

  it("refuses to let the client user impersonate a runtime", async () => {
    const calls = raw.subscribe("fn.call.>");
    await expect(
      (async () => {
        for await (const _ of calls) break;
      })(),
    ).rejects.toThrow(/Permissions Violation for Subscription to "fn.call.>"/);
    // Acks, done notices and replies to other inboxes are publishes the server drops and reports.
    raw.publish("$JS.ACK.JETFN_JOBS.add.1.1.1.0.0", "+ACK");
    raw.publish("jetfn.done.someone-else-job", JSON.stringify({ status: "succeeded" }));
    raw.publish("_INBOX.someone.else", "{}");
    await raw.flush();
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(asyncErrors.join("\n")).toMatch(/Permissions Violation for Publish to "\$JS.ACK.JETFN_JOBS/);
    expect(asyncErrors.join("\n")).toMatch(/Permissions Violation for Publish to "jetfn.done.someone-else-job"/);
    expect(asyncErrors.join("\n")).toMatch(/Permissions Violation for Publish to "_INBOX.someone.else"/);
    // Calls are still answered by the runtime only.
    expect(await client.call("add", { a: 2, b: 2 })).toEqual({ sum: 4 });
  });

  it("refuses a wrong password", async () => {
    await expect(
      connect({ servers: env.nats.url, user: "jetfn-client", pass: "wrong", reconnect: false }),
    ).rejects.toThrow(/Authorization/i);
  });
});
