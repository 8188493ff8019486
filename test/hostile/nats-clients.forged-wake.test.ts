import { jetstream } from "@nats-io/jetstream";
import { headers } from "@nats-io/transport-node";
import { afterAll, beforeAll, expect, it } from "vitest";
import { createTestEnvironment, eventually, type TestEnvironment } from "../helpers/environment";

// A job woken from the waiting stream carries `Jetfn-Woken`: the attempts it already spent and its
// first enqueue time. A client publishing to fn.job.<name> must not be able to write one: to give
// its job an old enqueue time, to make it look out of attempts, or to take an id of the shape the
// runtime derives itself. Without the tag check, each of these jobs would be believed.
let env: TestEnvironment;

beforeAll(async () => {
  env = await createTestEnvironment();
});

afterAll(async () => {
  await env?.close();
});

it("ignores a Jetfn-Woken header no runtime wrote", async () => {
  await env.startRuntime();
  const client = await env.client();
  const js = jetstream(client.connection);
  const publish = async (id: string, woken: string): Promise<void> => {
    const header = headers();
    header.set("Jetfn-Id", id);
    header.set("Jetfn-Woken", woken);
    await js.publish("fn.job.tenant-limited", JSON.stringify({ tenant: "forger", ms: 1 }), {
      msgID: `tenant-limited:${id}`,
      headers: header,
    });
  };
  // "2 attempts spent, enqueued in 2001": with 3 attempts it would run as attempt 3, dated 2001.
  await publish("forged-attempts-1", "2.1000000000000.AAAAAAAAAAAAAAAAAAAAAA");
  // A derived-shape id with a forged tag stays refused as before.
  const reserved = "0123abcd-0123-8123-0123-0123456789ab";
  await publish(reserved, "0.1000000000000.AAAAAAAAAAAAAAAAAAAAAA");

  const forged = await eventually(async () => {
    const view = await client.status("forged-attempts-1");
    return view.status === "succeeded" ? view : undefined;
  }, 20_000);
  expect(forged.attempts).toBe(1);
  expect((forged.result as { attempt: number }).attempt).toBe(1);
  expect(Date.parse(forged.enqueuedAt as string)).toBeGreaterThan(Date.now() - 60_000);

  const refused = await eventually(async () => {
    const [row] = await env.database.sql`
      select status, error from jetfn.invocations where function = 'tenant-limited' and status = 'dead'`;
    return row;
  }, 20_000);
  expect(refused.error).toMatchObject({ code: "E_INPUT_INVALID" });
  expect(await client.status(reserved).then((view) => view.status)).toBe("pending");
});
