import { connect } from "@nats-io/transport-node";
import { afterAll, beforeAll, expect, it } from "vitest";
import { STATUS_SUBJECT } from "../../runtime/nats/subjects";
import { createClient } from "../../runtime/sdk/client";
import { startNatsServer, type TestNatsServer } from "../helpers/nats-server";

// A runtime whose Postgres is coming back can leave a status request unanswered past the client's
// 5 s per-request limit (seen in the installed-package restart test under load). result() waits for
// the job until its own deadline, so one slow status poll must not end the wait.
let nats: TestNatsServer;

beforeAll(async () => {
  nats = await startNatsServer();
});

afterAll(async () => {
  await nats?.stop();
});

it("waits through a status request that gets no reply in time, until the job's own deadline", async () => {
  // Stands in for the runtime's status API: the first request is never answered, the next says done.
  const responder = await connect({ servers: nats.url });
  let requests = 0;
  responder.subscribe(STATUS_SUBJECT, {
    callback: (_error, message) => {
      requests++;
      if (requests === 1) return;
      message.respond(JSON.stringify({ id: "slow-status-job", fn: "add", status: "succeeded", result: { sum: 3 } }));
    },
  });
  await responder.flush();
  const client = await createClient({ natsUrl: nats.url });
  try {
    await expect(client.result("slow-status-job", { timeout: "30s" })).resolves.toEqual({ sum: 3 });
    expect(requests).toBeGreaterThanOrEqual(2);
  } finally {
    await client.close();
    await responder.close();
  }
}, 60_000);
