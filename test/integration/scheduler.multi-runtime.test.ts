import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { connect } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { scheduledJobId, scheduledJobKey, scheduleSecret } from "../../runtime/triggers/scheduled-job-id";
import { readSchedules, SCHEDULE_BUCKET } from "../../runtime/triggers/scheduler";
import { runCli } from "../helpers/cli";
import { createTestEnvironment, eventually, type TestEnvironment } from "../helpers/environment";

let env: TestEnvironment;
let dir: string;

const TICK = `import { defineFunction, z } from "jetfn";
export default defineFunction({
  every: "1s",
  input: z.object({ label: z.string() }),
  scheduleInput: { label: "tick" },
  async handler({ label }, ctx) {
    return { label, id: ctx.invocationId };
  },
});
`;

beforeAll(async () => {
  env = await createTestEnvironment();
  dir = await mkdtemp(path.join(tmpdir(), "jetfn-schedule-"));
  await writeFile(path.join(dir, "tick.ts"), TICK);
});

afterAll(async () => {
  await env?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** Due times of the scheduled jobs recorded so far, decoded from their ids. */
async function recordedDueTimes(): Promise<string[]> {
  const rows = await env.database.sql`select id, result from jetfn.invocations where function = 'tick' order by id`;
  return rows
    .map((row) => String(scheduledJobKey(String(row.id))))
    .map((key) => key.replace(/^tick@/, ""))
    .sort();
}

describe("schedules across runtimes", () => {
  it("publishes one job per due time with two runtimes running the same schedule", async () => {
    const first = await env.startRuntime({ functionsDir: dir });
    const second = await env.startRuntime({ functionsDir: dir });
    const fired: { dueAt: string; duplicate: boolean }[] = [];
    for (const runtime of [first, second]) runtime.events.on("schedule:fired", (event) => fired.push(event));
    await eventually(async () => (await recordedDueTimes()).length >= 4, 15_000);
    const next = first.schedules()[0];
    expect(next).toMatchObject({ fn: "tick", schedule: "every 1s" });
    expect(Date.parse(next?.nextDueAt as string)).toBeGreaterThan(Date.now() - 1_000);
    // `jetfn ls` shows the next due time and the outbox relay's lag.
    const listed = await runCli(["ls", "--json"], { NATS_URL: env.nats.url });
    const tick = listed.stdout
      .trim()
      .split("\n")
      .map((line) => JSON.parse(line))
      .find((row) => row.function === "tick");
    expect(Date.parse(tick?.nextDueAt)).toBeGreaterThan(Date.now() - 5_000);
    const table = await runCli(["ls"], { NATS_URL: env.nats.url });
    expect(table.stdout).toMatch(/NEXT DUE/);
    expect(table.stdout).toMatch(/outbox: \d+ waiting/);
    await Promise.all([first.stop(), second.stop()]);

    const dueTimes = await recordedDueTimes();
    expect(new Set(dueTimes).size).toBe(dueTimes.length);
    // Consecutive due times, one second apart: none missed, none doubled.
    const spacing = dueTimes.slice(1).map((due, index) => Date.parse(due) - Date.parse(dueTimes[index] as string));
    expect(new Set(spacing)).toEqual(new Set([1_000]));
    // JetStream stored exactly one message per due time, though both runtimes fired.
    const nc = await connect({ servers: env.nats.url });
    try {
      const manager = await jetstreamManager(nc);
      const info = await manager.streams.info("JETFN_JOBS", { subjects_filter: "fn.job.tick" });
      expect(info.state.subjects?.["fn.job.tick"]).toBe(dueTimes.length);
      const stored = fired.filter((event) => !event.duplicate).map((event) => event.dueAt);
      expect(new Set(stored).size).toBe(stored.length);
      // The bucket shows the last and next due time to any process (what `jetfn ls` reads).
      const [view] = await readSchedules(nc);
      expect(view).toMatchObject({ fn: "tick", schedule: "every 1s" });
      expect(dueTimes).toContain(view?.lastDueAt);
    } finally {
      await nc.close();
    }
    const ids = await env.database.sql`select id, result from jetfn.invocations where function = 'tick'`;
    const secret = await connect({ servers: env.nats.url }).then(async (connection) => {
      try {
        return await scheduleSecret(await new Kvm(connection).open(SCHEDULE_BUCKET));
      } finally {
        await connection.close();
      }
    });
    for (const row of ids) {
      const due = String(scheduledJobKey(String(row.id))).replace(/^tick@/, "");
      expect(row.id).toBe(scheduledJobId("tick", new Date(due), secret));
      expect(row.result).toMatchObject({ label: "tick" });
    }
  });
});
