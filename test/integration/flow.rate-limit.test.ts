import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { JetfnClient } from "../../runtime/sdk/client";
import { createTestEnvironment, type TestEnvironment } from "../helpers/environment";
import { finishedRuns } from "../helpers/flow-runs";

let env: TestEnvironment;
let client: JetfnClient;

beforeAll(async () => {
  env = await createTestEnvironment();
  client = await env.client();
});

afterAll(async () => {
  await env?.close();
});

/** Most starts within any window of `windowMs`. */
function mostStartsWithin(starts: number[], windowMs: number): number {
  const sorted = [...starts].sort((a, b) => a - b);
  let most = 0;
  for (let first = 0, last = 0; last < sorted.length; last++) {
    while ((sorted[last] as number) - (sorted[first] as number) >= windowMs) first++;
    most = Math.max(most, last - first + 1);
  }
  return most;
}

describe("rate limits across runtimes", () => {
  it("starts at most five jobs per two seconds across two runtimes; the others wait without spending attempts", async () => {
    await Promise.all([env.startRuntime(), env.startRuntime()]);
    await Promise.all(Array.from({ length: 20 }, (_, n) => client.enqueue("rate-limited", { n })));
    const runs = await finishedRuns(env, "rate-limited", 20, 60_000);
    expect(runs.map((run) => run.status)).toEqual(Array(20).fill("succeeded"));
    expect(runs.map((run) => run.attempts)).toEqual(Array(20).fill(1));
    const starts = runs.map((run) => run.result?.start as number);
    // The slot is taken a moment before the handler starts: allow that jitter (a tenth) below the period.
    expect(mostStartsWithin(starts, 1_800)).toBeLessThanOrEqual(5);
    // And the limit is used, not undershot; 20 starts need four windows.
    expect(mostStartsWithin(starts, 2_000)).toBeGreaterThanOrEqual(5);
    expect(Math.max(...starts) - Math.min(...starts)).toBeGreaterThanOrEqual(3 * 1_800);
  });

  it("limits starts per key: each account gets its own three per two seconds", async () => {
    await Promise.all([env.startRuntime(), env.startRuntime()]);
    await Promise.all(
      ["a", "b"].flatMap((account) =>
        Array.from({ length: 9 }, (_, n) => client.enqueue("rate-per-key", { account, n })),
      ),
    );
    const runs = await finishedRuns(env, "rate-per-key", 18, 60_000);
    expect(runs.map((run) => run.attempts)).toEqual(Array(18).fill(1));
    for (const account of ["a", "b"]) {
      const starts = runs.filter((run) => run.input?.account === account).map((run) => run.result?.start as number);
      expect(mostStartsWithin(starts, 1_800)).toBeLessThanOrEqual(3);
      expect(mostStartsWithin(starts, 2_000)).toBeGreaterThanOrEqual(3);
    }
    // The two accounts started side by side: more than one account's limit at once.
    expect(
      mostStartsWithin(
        runs.map((run) => run.result?.start as number),
        1_800,
      ),
    ).toBeGreaterThan(3);
  });
});
