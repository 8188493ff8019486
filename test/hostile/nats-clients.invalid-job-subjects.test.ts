import { jetstreamManager } from "@nats-io/jetstream";
import { afterAll, beforeAll, expect, it } from "vitest";
import { createTestEnvironment, eventually, type TestEnvironment } from "../helpers/environment";

// A client floods fn.job.<invalid name>, and publishes to the literal subject `fn.job.*` between
// real jobs. No function can ever take those jobs: every one must end dead with
// E_FUNCTION_NOT_FOUND and leave the stream, on nats-server 2.9 too (where asking for a subject's
// last message fails once its newest one is deleted), without touching the real jobs around them
// and without a warning at every sweep.
const FULL = process.env.JETFN_FAULTS_FULL === "1";
const BAD_NAME_JOBS = FULL ? 10_000 : 2_000;
const WILDCARD_JOBS = 20;
const REAL_JOBS = 20;

let env: TestEnvironment;

beforeAll(async () => {
  env = await createTestEnvironment();
});

afterAll(async () => {
  await env?.close();
});

it(`declares ${BAD_NAME_JOBS} jobs for fn.job.Bad-Name and ${WILDCARD_JOBS} for fn.job.* dead and removes them`, {
  timeout: FULL ? 600_000 : 180_000,
}, async () => {
  const runtime = await env.startRuntime({ healthCheckInterval: "1s" });
  const nc = runtime.nats;
  for (let start = 0; start < BAD_NAME_JOBS; start += 250) {
    const batch = Array.from({ length: Math.min(250, BAD_NAME_JOBS - start) }, (_, index) =>
      nc.request("fn.job.Bad-Name", JSON.stringify({ n: start + index }), { timeout: 30_000 }),
    );
    await Promise.all(batch);
  }
  for (let index = 0; index < Math.max(WILDCARD_JOBS, REAL_JOBS); index++) {
    if (index < WILDCARD_JOBS) await nc.request("fn.job.*", JSON.stringify({ n: index }), { timeout: 30_000 });
    if (index < REAL_JOBS) await nc.request("fn.job.add", JSON.stringify({ a: index, b: 1 }), { timeout: 30_000 });
  }
  const manager = await jetstreamManager(nc);
  const subjects = async () =>
    (await manager.streams.info("JETFN_JOBS", { subjects_filter: "fn.job.>" })).state.subjects ?? {};
  await eventually(
    async () => {
      const left = await subjects();
      return left["fn.job.Bad-Name"] === undefined && left["fn.job.*"] === undefined;
    },
    FULL ? 500_000 : 150_000,
  );
  const dead = await env.database.sql<{ function: string; count: number }[]>`
    select function, count(*)::int as count from jetfn.invocations
    where status = 'dead' and error->>'code' = 'E_FUNCTION_NOT_FOUND' group by function order by function`;
  expect(dead).toEqual([
    { function: "*", count: WILDCARD_JOBS },
    { function: "Bad-Name", count: BAD_NAME_JOBS },
  ]);
  // The real jobs ran and stay in the stream (kept for replay) next to where the others were.
  await eventually(async () => {
    const [row] = await env.database.sql<{ count: number }[]>`
      select count(*)::int as count from jetfn.invocations where function = 'add' and status = 'succeeded'`;
    return row?.count === REAL_JOBS;
  }, 60_000);
  expect((await subjects())["fn.job.add"]).toBe(REAL_JOBS);
  // Listed with the other dead jobs.
  const client = await env.client();
  const listed = await client.deadLetters({ limit: 1_000 });
  expect(listed.some((letter) => letter.function === "Bad-Name")).toBe(true);
  // No warning loop: one error line per sweep that buried jobs, no warning about them.
  expect(runtime.logs.matching("wildcard subject")).toEqual([]);
  expect(runtime.logs.matching("invalid function name are dead").length).toBeLessThanOrEqual(
    2 * Math.ceil((BAD_NAME_JOBS + WILDCARD_JOBS) / 100),
  );
});
