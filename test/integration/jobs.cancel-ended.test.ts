import { Kvm } from "@nats-io/kv";
import { connect, headers as natsHeaders } from "@nats-io/transport-node";
import { afterAll, beforeAll, expect, it } from "vitest";
import { CANCEL_BUCKET } from "../../runtime/invocation/cancellation";
import { doneSubject, ID_HEADER } from "../../runtime/nats/subjects";
import { createTestEnvironment, eventually, type TestEnvironment } from "../helpers/environment";

// A cancel mark can meet a job that had already ended: a second message of it (a republish, a
// redelivery) arrives after the mark was written. Before, that delivery was terminated and announced
// as `cancelled` on jetfn.done.<id> although the job's record said `succeeded`; now the record stands
// and nothing is announced.
let env: TestEnvironment;

beforeAll(async () => {
  env = await createTestEnvironment();
  await env.database.sql`create table items (id serial primary key, name text not null, attempt int, invocation text)`;
});

afterAll(async () => {
  await env?.close();
});

it("announces no cancel for a job that had already succeeded", { timeout: 60_000 }, async () => {
  await env.startRuntime();
  const client = await env.client();
  const job = await client.enqueue("add", { a: 1, b: 2 });
  await eventually(async () => (await client.status(job.id)).status === "succeeded", 20_000);

  const nc = await connect({ servers: env.nats.url });
  try {
    const notices: string[] = [];
    const subscription = nc.subscribe(doneSubject(job.id), {
      callback: (_error, message) => {
        notices.push(message.string());
      },
    });
    const kv = await new Kvm(nc).open(CANCEL_BUCKET);
    await kv.put(job.id, JSON.stringify({ reason: "too late", at: new Date().toISOString() }));
    // The same job published again under another message id: the runtime sees the mark first.
    const header = natsHeaders();
    header.set(ID_HEADER, job.id);
    const js = (await import("@nats-io/jetstream")).jetstream(nc);
    await js.publish("fn.job.add", JSON.stringify({ a: 1, b: 2 }), { msgID: `again-${job.id}`, headers: header });
    await new Promise((resolve) => setTimeout(resolve, 3_000));
    subscription.unsubscribe();
    expect(notices.filter((notice) => notice.includes('"cancelled"'))).toEqual([]);
    expect((await client.status(job.id)).status).toBe("succeeded");
  } finally {
    await nc.close();
  }
});
