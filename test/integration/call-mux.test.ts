import { connect, headers, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, expect, it } from "vitest";
import { CallMux } from "../../runtime/nats/call-mux";
import { createClient, type JetfnClient } from "../../runtime/sdk/client";
import { startNatsServer, type TestNatsServer } from "../helpers/nats-server";

let nats: TestNatsServer;
let responder: NatsConnection;
let requester: NatsConnection;

beforeAll(async () => {
  nats = await startNatsServer();
  responder = await connect({ servers: nats.url });
  requester = await connect({ servers: nats.url });
  // Echoes the body and a header, answering out of order (later requests first) to prove matching.
  responder.subscribe("echo.*", {
    callback: (_error, message) => {
      const delay = message.subject === "echo.slow" ? 50 : 0;
      setTimeout(() => {
        const reply = headers();
        reply.set("Seen", message.headers?.get("Tag") ?? "");
        message.respond(message.data, { headers: reply });
      }, delay);
    },
  });
  responder.subscribe("silent", { callback: () => {} });
  await responder.flush();
});

afterAll(async () => {
  await responder?.close();
  await requester?.close();
  await nats?.stop();
});

it("matches each reply to its request, with headers both ways", async () => {
  const mux = new CallMux(requester);
  const tag = headers();
  tag.set("Tag", "t1");
  const [slow, fast] = await Promise.all([
    mux.request("echo.slow", "first", { timeoutMs: 2_000, headers: tag }),
    mux.request("echo.fast", "second", { timeoutMs: 2_000 }),
  ]);
  expect([slow.string(), slow.headers?.get("Seen")]).toEqual(["first", "t1"]);
  expect([fast.string(), fast.headers?.get("Seen")]).toEqual(["second", ""]);
  const many = await Promise.all(
    Array.from({ length: 200 }, (_, i) => mux.request("echo.fast", `${i}`, { timeoutMs: 2_000 })),
  );
  expect(many.map((message) => message.string())).toEqual(Array.from({ length: 200 }, (_, i) => `${i}`));
  mux.close();
});

it("tells a subject nobody listens on from one that does not answer in time", async () => {
  const mux = new CallMux(requester);
  await expect(mux.request("nobody.here", "x", { timeoutMs: 2_000 })).rejects.toMatchObject({
    name: "NoRespondersError",
  });
  const started = performance.now();
  await expect(mux.request("silent", "x", { timeoutMs: 150 })).rejects.toMatchObject({ name: "TimeoutError" });
  expect(performance.now() - started).toBeGreaterThanOrEqual(140);
  mux.close();
});

it("fails requests still waiting when closed", async () => {
  const mux = new CallMux(requester);
  const waiting = mux.request("silent", "x", { timeoutMs: 5_000 });
  mux.close();
  await expect(waiting).rejects.toMatchObject({ name: "RequestError" });
});

it("gives client.call the same errors as before: no runtime listening, and no reply in time", async () => {
  const client: JetfnClient = await createClient({ natsUrl: nats.url, timeout: "150ms" });
  try {
    await expect(client.call("not-deployed", {})).rejects.toMatchObject({
      code: "E_UNAVAILABLE",
      message: expect.stringContaining("no jetfn runtime is listening"),
    });
    const quiet = await connect({ servers: nats.url });
    quiet.subscribe("fn.call.quiet", { callback: () => {} });
    await quiet.flush();
    await expect(client.call("quiet", {})).rejects.toMatchObject({ code: "E_HANDLER_TIMEOUT" });
    await quiet.close();
  } finally {
    await client.close();
  }
});
