import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { jetstream } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { headers } from "@nats-io/transport-node";
import { afterAll, beforeAll, expect, it } from "vitest";
import { resumeHeader } from "../../runtime/invocation/resume-tag";
import type { JetfnClient } from "../../runtime/sdk/client";
import { SCHEDULE_SECRET_KEY } from "../../runtime/triggers/scheduled-job-id";
import { SCHEDULE_BUCKET } from "../../runtime/triggers/scheduler";
import { createTestEnvironment, eventually, type TestEnvironment } from "../helpers/environment";

// A sleeping job goes on when its resumption arrives: a job message with `Jetfn-Resume`. Anyone may
// publish to fn.job.<name>, so the header carries a tag only a runtime can make, and only the token
// the record names may run the job on. A client must not be able to wake a job early (or at all),
// nor run its later steps by replaying a resumption or copying the job's message.

const SLEEP_FUNCTIONS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../fixtures/sleep-functions");
let env: TestEnvironment;
let client: JetfnClient;
let runsDir: string;

beforeAll(async () => {
  env = await createTestEnvironment();
  await env.database.sql`create table sleep_rows (id serial primary key, name text not null, step text not null)`;
  runsDir = await mkdtemp(path.join(tmpdir(), "jetfn-forged-resume-"));
  await env.startRuntime({ functionsDir: SLEEP_FUNCTIONS }, { laterTestsUseIt: true });
  client = await env.client();
});

afterAll(async () => {
  await env?.close();
  if (runsDir) await rm(runsDir, { recursive: true, force: true });
});

async function runs(name: string): Promise<string[]> {
  return (await readFile(path.join(runsDir, name), "utf8").catch(() => "")).split("\n").filter(Boolean);
}

function inputOf(name: string, sleep: string): Record<string, unknown> {
  return { name, runsFile: path.join(runsDir, name), sleep };
}

async function reaches(id: string, status: string): Promise<void> {
  await eventually(async () => (await client.status(id)).status === status, 60_000);
}

/** Publishes a job message for `sleepy` as any client could. */
async function publish(id: string, body: string, resume?: string): Promise<void> {
  const header = headers();
  header.set("Jetfn-Id", id);
  if (resume !== undefined) header.set("Jetfn-Resume", resume);
  await jetstream(client.connection).publish("fn.job.sleepy", body, { headers: header });
}

/** The runtimes' secret, as only a runtime (or whoever holds its NATS credentials) can read it. */
async function runtimeSecret(): Promise<string> {
  const kv = await new Kvm(client.connection).open(SCHEDULE_BUCKET);
  const entry = await kv.get(SCHEDULE_SECRET_KEY);
  return entry?.string() ?? "";
}

it("drops a resumption whose tag no runtime made, and wakes the job only when its time comes", {
  timeout: 120_000,
}, async () => {
  const { id } = await client.enqueue("sleepy" as never, inputOf("forged", "6s") as never);
  await reaches(id, "sleeping");
  const recordOf = () => env.database.sql`
    select status, attempts, resume, wake_at::text, updated_at::text from jetfn.invocations where id = ${id}`;
  const [asleep] = await recordOf();
  expect(asleep).toMatchObject({ status: "sleeping", attempts: 1, resume: "2s1" });
  // A made-up tag, for the token the record holds and for another.
  await publish(id, "", `2s1.${"A".repeat(22)}`);
  await publish(id, "", `2s2.${"B".repeat(22)}`);
  // One for a job that does not exist, with a body: no record is made for it.
  await publish("never-enqueued-1", JSON.stringify(inputOf("ghost", "0")), `1s1.${"A".repeat(22)}`);
  await new Promise((resolve) => setTimeout(resolve, 2_000));
  expect(await runs("forged")).toEqual(["before"]);
  // Not touched: no run of it started (one would have found it not due yet, and put it to sleep again).
  expect((await recordOf())[0]).toEqual(asleep);
  expect(await env.database.sql`select id from jetfn.invocations where id = 'never-enqueued-1'`).toHaveLength(0);
  expect(await runs("ghost")).toEqual([]);

  await reaches(id, "succeeded");
  expect(await runs("forged")).toEqual(["before", "after", "returned"]);
  // Not before the time it slept until.
  const [{ finished_at: finishedAt }] = (await env.database.sql`
    select finished_at from jetfn.invocations where id = ${id}`) as unknown as [{ finished_at: Date | string }];
  expect(new Date(finishedAt).getTime()).toBeGreaterThanOrEqual(new Date(asleep?.wake_at).getTime() - 1_000);
});

it("runs nothing of a sleeping job for a copy of its message, whatever its input", { timeout: 120_000 }, async () => {
  const { id } = await client.enqueue("sleepy" as never, inputOf("copied", "5s") as never);
  await reaches(id, "sleeping");
  // Its own input, and others (one takes a step no run took before): none runs a step's fn, nor
  // the code after the sleep.
  await publish(id, JSON.stringify(inputOf("copied", "5s")));
  await publish(id, JSON.stringify(inputOf("copied", "0")));
  await publish(id, JSON.stringify({ ...inputOf("copied", "0"), detour: true }));
  // One fails for good before any step: the job is not the copy's to end.
  await publish(id, JSON.stringify({ ...inputOf("copied", "0"), explode: true }));
  await new Promise((resolve) => setTimeout(resolve, 2_000));
  expect(await runs("copied")).toEqual(["before"]);
  const [record] = await env.database.sql`select status from jetfn.invocations where id = ${id}`;
  expect(record).toEqual({ status: "sleeping" });
  await reaches(id, "succeeded");
  expect(await runs("copied")).toEqual(["before", "after", "returned"]);
});

it("lets no copy of its message end a job that woke and runs on", { timeout: 120_000 }, async () => {
  const gate = path.join(runsDir, "woken-gate");
  const { id } = await client.enqueue("sleepy" as never, { ...inputOf("woken", "1s"), gate } as never);
  // Its run after the sleep holds in its step: the record is running, under the resumption's token.
  await eventually(async () => (await runs("woken")).includes("after"), 60_000);
  const [running] = await env.database.sql`select status, resume from jetfn.invocations where id = ${id}`;
  expect(running).toEqual({ status: "running", resume: "2s1" });
  // Copies with the job's id: one refused for its input, one failing for good, one returning at once.
  await publish(id, "{}");
  await publish(id, JSON.stringify({ ...inputOf("woken", "0"), explode: true }));
  await publish(id, JSON.stringify({ ...inputOf("woken", "0"), quick: true }));
  await new Promise((resolve) => setTimeout(resolve, 2_000));
  const [still] = await env.database.sql`select status, resume from jetfn.invocations where id = ${id}`;
  expect(still).toEqual({ status: "running", resume: "2s1" });
  await writeFile(gate, "");
  await reaches(id, "succeeded");
  expect((await client.status(id)).result).toMatchObject({ before: { attempt: 1 }, after: { attempt: 1 } });
  expect(await runs("woken")).toEqual(["before", "after", "returned"]);
});

it("runs nothing for a real resumption replayed after its job ended", { timeout: 120_000 }, async () => {
  const { id } = await client.enqueue("sleepy" as never, inputOf("replayed", "1s") as never);
  await reaches(id, "succeeded");
  expect(await runs("replayed")).toEqual(["before", "after", "returned"]);
  // The very header the runtime wrote (the sleep is step 2, first set): it no longer runs anything.
  await publish(id, "", resumeHeader(await runtimeSecret(), "sleepy", id, "2s1"));
  await new Promise((resolve) => setTimeout(resolve, 2_000));
  expect(await runs("replayed")).toEqual(["before", "after", "returned"]);
  const [record] = await env.database.sql`select status, attempts from jetfn.invocations where id = ${id}`;
  expect(record).toEqual({ status: "succeeded", attempts: 1 });
});
