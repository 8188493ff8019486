import { jetstream } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { headers } from "@nats-io/transport-node";
import { afterAll, beforeAll, expect, it } from "vitest";
import { FLOW_BUCKET } from "../../runtime/flow/slot-board";
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

it("keeps a lease kept for a woken job from a job that copies its id without a tag that verifies", async () => {
  await env.startRuntime();
  const client = await env.client();
  const bucket = await eventually(() => new Kvm(client.connection).open(FLOW_BUCKET).catch(() => undefined));
  // Slot 0 of tenant "kept" is kept for the job a runtime woke; slot 1 is running another.
  const kept = JSON.stringify({ until: Date.now() + 3_600_000, for: "woken-victim-1" });
  await bucket.put("c.k_kept.tenant-limited.0", kept);
  await bucket.put("c.k_kept.tenant-limited.1", JSON.stringify({ until: Date.now() + 3_600_000 }));
  const header = headers();
  header.set("Jetfn-Id", "woken-victim-1");
  header.set("Jetfn-Woken", "0.1000000000000.AAAAAAAAAAAAAAAAAAAAAA");
  header.set("Jetfn-Kept-Slot", "c.k_kept.tenant-limited.0");
  await jetstream(client.connection).publish("fn.job.tenant-limited", JSON.stringify({ tenant: "kept", ms: 1 }), {
    msgID: "tenant-limited:woken-victim-1:forged",
    headers: header,
  });
  // It waits like any job over the limit; the lease stays kept for the job it was kept for.
  await eventually(async () => (await client.status("woken-victim-1")).status === "waiting", 20_000);
  expect((await bucket.get("c.k_kept.tenant-limited.0"))?.string()).toBe(kept);
});
