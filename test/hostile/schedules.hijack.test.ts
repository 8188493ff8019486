import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { jetstream } from "@nats-io/jetstream";
import { headers } from "@nats-io/transport-node";
import { afterAll, beforeAll, expect, it } from "vitest";
import { createTestEnvironment, eventually, type TestEnvironment } from "../helpers/environment";

// A client that predicts a scheduled job's id and publishes a job of its own with it before the due
// time must not take the scheduled run's place: the scheduled run still runs, with the scheduler's
// input, under an id the client could not compute.
let env: TestEnvironment;
let dir: string;

const TICK = `import { defineFunction, z } from "jetfn";
export default defineFunction({
  every: "2s",
  input: z.object({ label: z.string() }),
  scheduleInput: { label: "scheduler" },
  async handler({ label }) {
    return { label };
  },
});
`;

beforeAll(async () => {
  env = await createTestEnvironment();
  dir = await mkdtemp(path.join(tmpdir(), "jetfn-hijack-"));
  await writeFile(path.join(dir, "tick.ts"), TICK);
});

afterAll(async () => {
  await env?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** What a client could predict: `s_` + base64url of `<fn>@<due time>`, and that key as Nats-Msg-Id. */
function predictedIds(fn: string, dueAt: number): { jobId: string; msgId: string } {
  const key = `${fn}@${new Date(dueAt).toISOString()}`;
  return { jobId: `s_${Buffer.from(key).toString("base64url")}`, msgId: key };
}

it("keeps a scheduled run when a client pre-publishes a job with its predicted id", { timeout: 120_000 }, async () => {
  const runtime = await env.startRuntime({ functionsDir: dir });
  const fired: { dueAt: string; jobId: string }[] = [];
  runtime.events.on("schedule:fired", (event) => fired.push(event));
  await eventually(() => runtime.schedules()[0]?.nextDueAt ?? undefined, 30_000);

  // The attacker publishes, before their due time, a job for each of the next due times.
  const client = await env.client();
  const js = jetstream(client.connection);
  const first = Math.ceil((Date.now() + 3_000) / 2_000) * 2_000;
  const attacked = [0, 1, 2, 3, 4].map((step) => first + step * 2_000);
  for (const dueAt of attacked) {
    const { jobId, msgId } = predictedIds("tick", dueAt);
    const header = headers();
    header.set("Jetfn-Id", jobId);
    await js.publish("fn.job.tick", JSON.stringify({ label: "attacker" }), { msgID: msgId, headers: header });
  }

  const last = new Date(attacked[attacked.length - 1] as number).toISOString();
  await eventually(() => fired.some((event) => event.dueAt >= last), 60_000);
  const firedAttacked = fired.filter((event) => attacked.includes(Date.parse(event.dueAt)));
  // Under load a tick can be late and fold missed due times into one: most still fire.
  expect(firedAttacked.length).toBeGreaterThanOrEqual(3);
  const results = await eventually(async () => {
    const ids = firedAttacked.map((event) => event.jobId);
    const rows = await env.database.sql`
      select id, status, result from jetfn.invocations where id = any(${ids}) and status = 'succeeded'`;
    return rows.length === new Set(ids).size ? rows : undefined;
  }, 30_000).catch(async () => {
    const ids = firedAttacked.map((event) => event.jobId);
    return env.database.sql`select id, status, result from jetfn.invocations where id = any(${ids})`;
  });
  await runtime.stop();
  for (const event of firedAttacked) {
    const row = results.find((candidate) => candidate.id === event.jobId);
    expect({ dueAt: event.dueAt, status: row?.status, result: row?.result }).toEqual({
      dueAt: event.dueAt,
      status: "succeeded",
      result: { label: "scheduler" },
    });
    expect(event.jobId).not.toBe(predictedIds("tick", Date.parse(event.dueAt)).jobId);
  }
});
