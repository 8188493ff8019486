import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { expect, it } from "vitest";
import { createPriorityBacklog } from "../../runtime/flow/priority-backlog";
import { startPriorityPullers } from "../../runtime/flow/priority-pullers";
import { createLimiter } from "../../runtime/invocation/limiter";
import { captureLogs } from "../helpers/logs";
import { startNatsServer } from "../helpers/nats-server";
import { stopWhenTestEnds } from "../helpers/test-scope";

// A function's priority pullers look for waiting priority jobs at start and after each reconnect
// (refresh), retrying with a growing pause while the stream cannot be read. Refreshes while a look
// is retrying make it look again at once, never start another retrying loop beside it.

const MISSING_STREAM = "NO_SUCH_JOBS";

it("keeps one retrying look for waiting priority jobs however often it is refreshed", async () => {
  const nats = await startNatsServer();
  const nc = await connect({ servers: nats.url });
  stopWhenTestEnds(() => nc.close());
  const observer = await connect({ servers: nats.url });
  stopWhenTestEnds(() => observer.close());
  // Every look starts with the stream's info, which the server refuses: the stream does not exist.
  const looks: number[] = [];
  observer.subscribe(`$JS.API.STREAM.INFO.${MISSING_STREAM}`, {
    callback: () => {
      looks.push(performance.now());
    },
  });
  await observer.flush();
  const { logger } = captureLogs();
  const pullers = startPriorityPullers(
    {
      js: jetstream(nc),
      stream: MISSING_STREAM,
      fn: "refreshed",
      concurrency: () => 1,
      heartbeatMs: () => 10_000,
      logger,
    },
    () => createLimiter(1),
    () => async () => {},
    {
      nc,
      backlog: createPriorityBacklog(await jetstreamManager(nc), MISSING_STREAM),
      ensureConsumer: async () => {},
    },
  );
  stopWhenTestEnds(() => pullers.stop());
  await new Promise((resolve) => setTimeout(resolve, 200));
  const refreshedAt = performance.now();
  for (let index = 0; index < 5; index++) pullers.refresh();
  await new Promise((resolve) => setTimeout(resolve, 2_900));
  await observer.flush();
  const since = looks.map((at) => at - refreshedAt);
  // Right after the refreshes the one loop looked again; then it waits 1 s, 2 s: one more look by 2.9 s.
  // Five loops beside the first would each look at once and again a second later.
  expect(since.filter((ms) => ms >= 0 && ms < 500).length).toBeGreaterThanOrEqual(1);
  expect(since.filter((ms) => ms >= 500).length).toBeLessThanOrEqual(2);
}, 20_000);
