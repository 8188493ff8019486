import { expect, it } from "vitest";
import { createClient } from "../../runtime/sdk/client";
import { createTestDatabase } from "../helpers/database";
import { startDroppingProxy } from "../helpers/dropping-proxy";
import { startClusterFunctionsRuntime } from "../helpers/environment";
import { captureLogs } from "../helpers/logs";
import { startNatsServer } from "../helpers/nats-server";
import { stopWhenTestEnds } from "../helpers/test-scope";

// A keyed enqueue is a few key-value and stream requests in a row on the runtime, each allowed 5 s.
// The client waited 5 s too: when one of the runtime's requests went unanswered (a slow key-value
// write), the client gave up (E_HANDLER_TIMEOUT) while the runtime still stored the job, so the
// caller did not learn its id. Here the runtime's write of the job's sequence into its singleton
// claim is lost (the proxy between the runtime and NATS drops it): the runtime waits out its 5 s,
// writes it again in the background and answers with the stored job.
it("answers a keyed enqueue whose runtime waited out one unanswered key-value write", async () => {
  const nats = await startNatsServer();
  let armed = false;
  let claimWrites = 0;
  const proxy = await startDroppingProxy(nats.port, (subject) => {
    if (!armed || !subject.startsWith("$KV.JETFN_JOB_KEYS.")) return false;
    claimWrites++;
    return claimWrites === 2; // The first write takes the claim, the second records the job's sequence.
  });
  const database = await createTestDatabase();
  const logs = captureLogs();
  await startClusterFunctionsRuntime({ natsUrl: proxy.url, databaseUrl: database.url, logger: logs.logger });
  const client = await createClient({ natsUrl: nats.url });
  stopWhenTestEnds(() => client.close());

  armed = true;
  const options = { id: "slow-claim-0001", singleton: { key: "slow-claim" } };
  const job = await client.enqueue("add", { a: 1, b: 2 }, options);
  expect(proxy.dropped).toHaveLength(1);
  expect(job).toMatchObject({ id: "slow-claim-0001", existing: false });
  expect(logs.matching("Could not write a singleton job's sequence into its claim; retrying.")).toHaveLength(1);
  // Asked again with the same id (as after a timeout of its own), the client is told it was enqueued.
  expect(await client.enqueue("add", { a: 1, b: 2 }, options)).toMatchObject({ id: job.id, existing: true });
  expect(await client.result(job.id)).toEqual({ sum: 3 });
});
