import type { KV } from "@nats-io/kv";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connectDatabase, type DatabaseClient } from "../../runtime/db/client";
import { claimKey, openJobKeys, SINGLETON_KEY_HEADER } from "../../runtime/flow/job-keys";
import { enqueueSingleton } from "../../runtime/flow/singleton";
import { type Cancellations, openCancellations } from "../../runtime/invocation/cancellation";
import { type PublishedJob, publishJob } from "../../runtime/nats/publish-job";
import { StreamPublisher } from "../../runtime/nats/stream-publisher";
import type { JetfnClient } from "../../runtime/sdk/client";
import { JetfnError } from "../../runtime/support/errors";
import { createTestEnvironment, eventually, type TestEnvironment } from "../helpers/environment";
import { captureLogs } from "../helpers/logs";

// The singleton claim, driven as the enqueue API drives it, with publishes the test holds back or
// fails. The jobs are of a function no runtime serves: they stay queued, with no record.
const FN = "nobody-serves-this";
let env: TestEnvironment;
let client: JetfnClient;
let database: DatabaseClient;
let keys: KV;
let cancellations: Cancellations;
let publisher: StreamPublisher;
const { logger } = captureLogs();

beforeAll(async () => {
  env = await createTestEnvironment();
  // Creates the streams and answers cancels.
  await env.startRuntime({}, { laterTestsUseIt: true });
  client = await env.client();
  database = connectDatabase({ url: env.database.url, poolSize: 2 });
  keys = await openJobKeys(client.connection);
  cancellations = await openCancellations(client.connection, logger);
  publisher = new StreamPublisher(client.connection);
});

afterAll(async () => {
  await cancellations?.close();
  await database?.close();
  await env?.close();
});

/** Publishes singleton job `id` with key `key`, as the enqueue API does. */
function publish(id: string, key: string): () => Promise<PublishedJob> {
  return () => publishJob(publisher, FN, {}, { id, headers: { [SINGLETON_KEY_HEADER]: key } });
}

const noCancels = (): boolean => false;

describe("singleton claims", () => {
  it("keeps the holder's claim when a repeat of its enqueue fails to publish while the first publish is under way", async () => {
    const holder = { id: "repeat-holder-0001", fn: FN, key: "repeat" };
    let release = () => {};
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    const first = enqueueSingleton(
      keys,
      database,
      holder,
      async () => {
        await held;
        return publish(holder.id, holder.key)();
      },
      logger,
      noCancels,
    );
    // The first enqueue claimed the key and is publishing; the client's retry comes to another runtime.
    await eventually(async () => (await keys.get(claimKey("singleton", FN, holder.key)))?.operation === "PUT");
    const repeat = enqueueSingleton(
      keys,
      database,
      holder,
      () => Promise.reject(new JetfnError("E_UNAVAILABLE", "publishing failed")),
      logger,
      noCancels,
    );
    await expect(repeat).rejects.toThrow(/publishing failed/);
    release();
    expect(await first).toMatchObject({ id: holder.id, existing: false });
    // The holder is queued: the key stays held.
    const other = { id: "repeat-other-0001", fn: FN, key: holder.key };
    expect(
      await enqueueSingleton(keys, database, other, publish(other.id, other.key), logger, noCancels),
    ).toMatchObject({
      id: holder.id,
      existing: true,
    });
  });

  it("frees the key of a queued holder at once when it is cancelled, before any runtime received it", async () => {
    const singleton = { key: "cancelled-holder" };
    const holder = await client.enqueue(FN, {}, { singleton });
    expect(holder.existing).toBe(false);
    // Its function is unknown to the cancel (no record, not scheduled): only the cancel mark is written.
    await client.cancel(holder.id);
    await eventually(() => cancellations.cancelled(holder.id) !== undefined);
    // Through the enqueue API, as an app would: once the runtime answering it has the cancel mark
    // (its own copy, milliseconds behind this one), the key is free. Before, it stayed held.
    const outcome = await eventually(async () => {
      const enqueued = await client.enqueue(FN, {}, { singleton });
      return !enqueued.existing && enqueued;
    }, 5_000);
    expect(outcome.id).not.toBe(holder.id);
  });
});
