import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import type { ReservedSql } from "postgres";
import { afterAll, beforeAll, expect, it } from "vitest";
import { HELD_WINDOWS, pullWindow } from "../../runtime/nats/job-puller";
import { createTestEnvironment, eventually, type TestEnvironment } from "../helpers/environment";

const FUNCTION = "held-cap-noop";
let env: TestEnvironment;
let dir: string;
let lock: ReservedSql | undefined;

beforeAll(async () => {
  env = await createTestEnvironment();
  dir = await mkdtemp(path.join(tmpdir(), "jetfn-functions-"));
  await writeFile(
    path.join(dir, `${FUNCTION}.ts`),
    `import { defineFunction, z } from "jetfn";
export default defineFunction({
  input: z.object({ n: z.number() }),
  concurrency: 1,
  async handler() {
    return null;
  },
});
`,
  );
  await env.startRuntime({ functionsDir: dir });
});

afterAll(async () => {
  await lock?.unsafe("rollback").catch(() => {});
  lock?.release();
  await env?.close();
  await rm(dir, { recursive: true, force: true });
});

async function succeeded(): Promise<number> {
  const [row] = await env.database.sql`
    select count(*)::int as n from jetfn.invocations where function = ${FUNCTION} and status = 'succeeded'`;
  return row?.n as number;
}

it("holds at most a few windows of jobs while their records cannot be written, and loses none", async () => {
  const client = await env.client();
  // Finished jobs of a quick handler: the window opens to its widest, 32 for concurrency 1.
  await Promise.all(Array.from({ length: 50 }, (_, n) => client.enqueue(FUNCTION, { n })));
  await eventually(async () => (await succeeded()) === 50);

  // Records of jobs that wrote nothing are inserted in batches; this lock makes those inserts wait.
  lock = await env.database.sql.reserve();
  await lock.unsafe("begin");
  await lock.unsafe("lock table jetfn.invocations in share mode");
  const jobs = 1_000;
  await Promise.all(Array.from({ length: jobs }, (_, n) => client.enqueue(FUNCTION, { n: 50 + n })));

  const nc = await connect({ servers: env.nats.url });
  try {
    const manager = await jetstreamManager(nc);
    const info = () => manager.consumers.info("JETFN_JOBS", FUNCTION);
    await eventually(async () => (await info()).num_ack_pending > 0);
    // Long enough for an uncapped puller to take every job (it pulls 32 at a time in milliseconds).
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    const held = await info();
    const cap = HELD_WINDOWS * pullWindow(1, 0);
    expect(held.num_ack_pending).toBeGreaterThan(0);
    expect(held.num_ack_pending).toBeLessThanOrEqual(cap);
    expect(held.num_pending).toBeGreaterThanOrEqual(jobs - cap);
  } finally {
    await nc.close();
  }

  await lock.unsafe("rollback");
  lock.release();
  lock = undefined;
  await eventually(async () => (await succeeded()) === 50 + jobs, 30_000);
});
