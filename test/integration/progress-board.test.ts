import { connect } from "@nats-io/transport-node";
import pino from "pino";
import { afterAll, beforeAll, expect, it } from "vitest";
import { openProgressBoard, type ProgressBoard, RUNNING_MARK_AFTER_MS } from "../../runtime/nats/progress-board";
import { eventually } from "../helpers/environment";
import { startNatsServer, type TestNatsServer } from "../helpers/nats-server";

// The board marks a job running once it has run for a second (one sweep for every job, not a
// timer each), writes a job's first progress at once, and never writes a job that ended sooner.

let server: TestNatsServer;
let nc: Awaited<ReturnType<typeof connect>>;
let board: ProgressBoard;

beforeAll(async () => {
  server = await startNatsServer();
  nc = await connect({ servers: server.url });
  board = await openProgressBoard(nc, pino({ enabled: false }));
});

afterAll(async () => {
  await nc?.close();
  await server?.stop();
});

it("marks jobs running after a second, oldest first, and leaves out those that ended before", async () => {
  const started = Date.now();
  const quick = board.begin("job-quick", "f", 1);
  const slow = board.begin("job-slow", "f", 1, { input: { n: 1 } });
  await new Promise((resolve) => setTimeout(resolve, 300));
  const later = board.begin("job-later", "f", 2);
  quick.finish();
  const entry = await eventually(() => board.get("job-slow"), 5_000);
  // Not before its second: the sweep waited for it.
  expect(Date.now() - started).toBeGreaterThanOrEqual(RUNNING_MARK_AFTER_MS);
  expect(entry).toMatchObject({ status: "running", fn: "f", attempt: 1, input: { n: 1 } });
  // The job that began later is marked at its own second (the sweep waits again for it).
  expect(await eventually(() => board.get("job-later"), 5_000)).toMatchObject({ status: "running", attempt: 2 });
  expect(await board.get("job-quick")).toBeUndefined();
  slow.finish();
  later.finish();
  await eventually(async () => (await board.get("job-slow")) === undefined, 5_000);
});

it("writes a job's first progress at once, and the newest value at most once per interval", async () => {
  const started = Date.now();
  const job = board.begin("job-progress", "f", 1);
  job.update(1, 10);
  const first = await eventually(() => board.get("job-progress"), 5_000);
  expect(Date.now() - started).toBeLessThan(RUNNING_MARK_AFTER_MS);
  expect(first).toMatchObject({ done: 1, total: 10 });
  job.update(2, undefined);
  job.update(3, undefined);
  await eventually(async () => (await board.get("job-progress"))?.done === 3, 5_000);
  expect(await board.get("job-progress")).toMatchObject({ done: 3, total: 10 });
  job.finish();
});
