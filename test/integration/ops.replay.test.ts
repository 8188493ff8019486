import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { REPLAY_OF_HEADER } from "../../runtime/nats/replay-jobs";
import type { JetfnClient } from "../../runtime/sdk/client";
import { runCli } from "../helpers/cli";
import { createTestEnvironment, eventually, type TestEnvironment } from "../helpers/environment";

/** "Production": where the jobs first ran. "Local": a developer's runtime to replay them into. */
let production: TestEnvironment;
let local: TestEnvironment;
let client: JetfnClient;
const originals: string[] = [];
let betweenBatches: string;

beforeAll(async () => {
  [production, local] = await Promise.all([createTestEnvironment(), createTestEnvironment()]);
  for (const env of [production, local]) {
    await env.database
      .sql`create table items (id serial primary key, name text not null, attempt int, invocation text)`;
    await env.startRuntime();
  }
  client = await production.client();
  for (const name of ["early-1", "early-2"]) originals.push((await client.enqueue("insert-item", { name })).id);
  await Promise.all(originals.map((id) => client.result(id)));
  betweenBatches = new Date().toISOString();
  await new Promise((resolve) => setTimeout(resolve, 20));
  const late = (await client.enqueue("insert-item", { name: "late" })).id;
  originals.push(late);
  await client.result(late);
  await client.enqueueAndWait("add", { a: 1, b: 2 });
}, 90_000);

afterAll(async () => {
  await Promise.allSettled([production?.close(), local?.close()]);
});

async function names(env: TestEnvironment): Promise<string[]> {
  const rows = await env.database.sql`select name from items order by name`;
  return rows.map((row) => row.name as string);
}

async function streamLastSeq(url: string): Promise<number> {
  const nc = await connect({ servers: url });
  try {
    return (await (await jetstreamManager(nc)).streams.info("JETFN_JOBS")).state.last_seq;
  } finally {
    await nc.close();
  }
}

describe("jetfn replay", () => {
  it("re-runs a function's past jobs into another runtime as new jobs, leaving the originals alone", async () => {
    const seqBefore = await streamLastSeq(production.nats.url);
    const result = await runCli(["replay", "insert-item", "--since", "10m", "--to", local.nats.url, "--json"], {
      NATS_URL: production.nats.url,
    });
    expect(result).toMatchObject({ code: 0, stderr: "" });
    const report = JSON.parse(result.stdout) as { replayed: number; jobs: { id: string; replayOf: string }[] };
    expect(report.replayed).toBe(3);
    expect(report.jobs.map((job) => job.replayOf)).toEqual(originals);
    for (const job of report.jobs) expect(originals).not.toContain(job.id);
    await eventually(async () => (await names(local)).length === 3, 15_000);
    expect(await names(local)).toEqual(["early-1", "early-2", "late"]);
    const rows = await local.database.sql`select id from jetfn.invocations where status = 'succeeded' order by id`;
    expect(rows.map((row) => row.id).sort()).toEqual(report.jobs.map((job) => job.id).sort());
    // The originals: not re-run, not re-published.
    expect(await names(production)).toEqual(["early-1", "early-2", "late"]);
    expect(await streamLastSeq(production.nats.url)).toBe(seqBefore);
    const nc = await connect({ servers: local.nats.url });
    try {
      const stored = await (await jetstreamManager(nc)).streams.getMessage("JETFN_JOBS", {
        last_by_subj: "fn.job.insert-item",
      });
      expect(stored?.header.get(REPLAY_OF_HEADER)).toBe(originals[2]);
    } finally {
      await nc.close();
    }
  });

  it("--until bounds the window (a time or a duration ago)", async () => {
    const result = await runCli(
      ["replay", "insert-item", "--since", "10m", "--until", betweenBatches, "--to", local.nats.url, "--json"],
      { NATS_URL: production.nats.url },
    );
    expect(JSON.parse(result.stdout)).toMatchObject({ replayed: 2 });
    const none = await runCli(["replay", "insert-item", "--since", "10m", "--until", "10m", "--to", local.nats.url], {
      NATS_URL: production.nats.url,
    });
    expect(none.stdout).toMatch(/^replayed 0 job\(s\) of insert-item/);
    const nothingYet = await runCli(["replay", "insert-item", "--since", "10m", "--until", "yesterday-ish"], {
      NATS_URL: production.nats.url,
    });
    expect(nothingYet.stderr).toMatch(/^jetfn: E_INPUT_INVALID: --until "yesterday-ish" is neither a duration/);
  });

  it("replays into the same NATS by default, without replaying its own replays", async () => {
    const result = await runCli(["replay", "insert-item", "--since", "10m", "--json"], {
      NATS_URL: production.nats.url,
    });
    expect(JSON.parse(result.stdout)).toMatchObject({ replayed: 3 });
    await eventually(async () => (await names(production)).length === 6, 15_000);
  });

  it("replays jobs of every priority, each to its own level's subject", async () => {
    const plain = await client.enqueue("echo", { value: "plain" });
    const urgent = await client.enqueue("echo", { value: "urgent" }, { priority: 2 });
    await Promise.all([client.result(plain.id), client.result(urgent.id)]);
    const result = await runCli(["replay", "echo", "--since", "10m", "--to", local.nats.url, "--json"], {
      NATS_URL: production.nats.url,
    });
    expect(result).toMatchObject({ code: 0, stderr: "" });
    const report = JSON.parse(result.stdout) as { jobs: { id: string; replayOf: string; priority: number }[] };
    expect(report.jobs.map((job) => [job.replayOf, job.priority])).toEqual([
      [plain.id, 0],
      [urgent.id, 2],
    ]);
    const nc = await connect({ servers: local.nats.url });
    try {
      const stored = await (await jetstreamManager(nc)).streams.getMessage("JETFN_JOBS", {
        last_by_subj: "fn.job.echo.P2",
      });
      expect(stored?.header.get(REPLAY_OF_HEADER)).toBe(urgent.id);
    } finally {
      await nc.close();
    }
    const localClient = await local.client();
    const values = await Promise.all(report.jobs.map((job) => localClient.result(job.id)));
    expect(values.map((value) => (value as { value: string }).value)).toEqual(["plain", "urgent"]);
    const text = await runCli(["replay", "echo", "--since", "10m", "--to", local.nats.url], {
      NATS_URL: production.nats.url,
    });
    expect(text.stdout).toMatch(/^replayed 2 job\(s\) of echo, 1 with a priority \(kept\)/);
  });
});
