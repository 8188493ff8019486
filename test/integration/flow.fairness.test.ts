import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { gatherOverview } from "../../runtime/inspect/function-overview";
import type { JetfnClient } from "../../runtime/sdk/client";
import { createTestEnvironment, eventually, type TestEnvironment } from "../helpers/environment";

/** Tenant A's backlog: 10,000 jobs in full mode (JETFN_FAULTS_FULL=1), 2,000 in `npm test`. */
const BACKLOG = process.env.JETFN_FAULTS_FULL === "1" ? 10_000 : 2_000;

let env: TestEnvironment;
let client: JetfnClient;

beforeAll(async () => {
  env = await createTestEnvironment();
  client = await env.client();
});

afterAll(async () => {
  await env?.close();
});

async function finishedOf(tenant: string): Promise<number> {
  const [row] = await env.database.sql`
    select count(*)::int as n from jetfn.invocations
    where function = 'tenant-limited' and input->>'tenant' = ${tenant} and status = 'succeeded'`;
  return row?.n as number;
}

describe("fairness between keys", () => {
  it(`runs tenant B's 10 jobs within seconds while tenant A's ${BACKLOG} queued before them wait their turn`, async () => {
    await Promise.all([env.startRuntime(), env.startRuntime()]);
    for (let at = 0; at < BACKLOG; at += 500) {
      await Promise.all(
        Array.from({ length: Math.min(500, BACKLOG - at) }, () =>
          client.enqueue("tenant-limited", { tenant: "a", ms: 20 }),
        ),
      );
    }
    // jetfn ls shows the limit, and A's jobs waiting for it (out of the queue).
    const row = await eventually(async () => {
      const overview = await gatherOverview(client.connection, { stream: "JETFN_JOBS" });
      const found = overview.functions.find((fn) => fn.function === "tenant-limited");
      return found && (found.waiting ?? 0) > 0 ? found : undefined;
    }, 30_000);
    expect(row.limits).toEqual(["concurrency 2 per key"]);
    const enqueuedB = Date.now();
    const b = await Promise.all(
      Array.from({ length: 10 }, () => client.enqueue("tenant-limited", { tenant: "b", ms: 20 })),
    );
    await eventually(async () => (await finishedOf("b")) === 10, 60_000);
    const tookMs = Date.now() - enqueuedB;
    const aDone = await finishedOf("a");
    console.info(`flow fairness: B done in ${tookMs} ms; A had ${aDone} of ${BACKLOG} done`);
    // A runs two at a time (20 ms each): its backlog needs BACKLOG * 10 ms at best. B did not wait for it.
    expect(aDone).toBeLessThan(BACKLOG / 2);
    expect(tookMs).toBeLessThan(BACKLOG * 5);
    for (const job of b) expect((await client.status(job.id)).attempts).toBe(1);
    // Enqueueing 2,000 jobs and the waits above: over 30 s beside two CPU burners.
  }, 120_000);
});
