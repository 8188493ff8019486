import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { scheduledJobKey } from "../../runtime/triggers/scheduled-job-id";
import { createTestEnvironment, eventually, type TestEnvironment } from "../helpers/environment";

let env: TestEnvironment;
let dir: string;

const POLICIES = ["latest", "all", "none"] as const;

function scheduledSource(catchUp: string): string {
  return `import { defineFunction, z } from "jetfn";
export default defineFunction({
  every: "1s",
  catchUp: ${JSON.stringify(catchUp)},
  input: z.object({}),
  async handler() {
    return { ok: true };
  },
});
`;
}

beforeAll(async () => {
  env = await createTestEnvironment();
  dir = await mkdtemp(path.join(tmpdir(), "jetfn-catch-up-"));
  for (const policy of POLICIES) await writeFile(path.join(dir, `catch-${policy}.ts`), scheduledSource(policy));
});

afterAll(async () => {
  await env?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** Due times (ms) of the jobs a scheduled function ran, decoded from their ids. */
async function dueTimes(fn: string): Promise<number[]> {
  const rows = await env.database.sql`select id from jetfn.invocations where function = ${fn} and status = 'succeeded'`;
  return rows
    .map((row) => Date.parse(String(scheduledJobKey(String(row.id))).replace(`${fn}@`, "")))
    .sort((a, b) => a - b);
}

describe("catching up on due times missed while no runtime ran", () => {
  it("follows each function's catchUp policy after a downtime", async () => {
    const before = await env.startRuntime({ functionsDir: dir });
    await eventually(
      async () => (await Promise.all(POLICIES.map((p) => dueTimes(`catch-${p}`)))).every((d) => d.length >= 2),
      15_000,
    );
    await before.stop();
    const stoppedAt = Date.now();
    await new Promise((resolve) => setTimeout(resolve, 4_500));
    const restartedAt = Date.now();
    const after = await env.startRuntime({ functionsDir: dir });
    // Running again: every function has a job for a due time after the restart.
    await eventually(
      async () =>
        (await Promise.all(POLICIES.map((p) => dueTimes(`catch-${p}`)))).every(
          (d) => (d.at(-1) ?? 0) > restartedAt + 1_000,
        ),
      15_000,
    );
    const caughtUp = (fn: string) =>
      after.logs.lines
        .filter((line) => line.msg === "Scheduled job published." && line.fn === fn && line.catchUp === true)
        .map((line) => Date.parse(String(line.dueAt)));
    // The downtime ends when the new runtime's scheduler first fires on time, which on a slow machine
    // can be a second or more after restartedAt: due times before that were missed.
    const resumedAt = (fn: string) =>
      Math.min(
        ...after.logs.lines
          .filter((line) => line.msg === "Scheduled job published." && line.fn === fn && line.catchUp === false)
          .map((line) => Date.parse(String(line.dueAt))),
      );
    const missed = (fn: string, due: number[]) => due.filter((time) => time > stoppedAt && time < resumedAt(fn));

    // latest: exactly one catch-up job, for the most recent missed due time.
    const latest = await dueTimes("catch-latest");
    expect(caughtUp("catch-latest")).toHaveLength(1);
    expect(missed("catch-latest", latest)).toHaveLength(1);
    expect(caughtUp("catch-latest")[0]).toBeGreaterThanOrEqual(Math.floor(restartedAt / 1_000) * 1_000);

    // all: every missed due time ran; the sequence has no gap at all.
    const all = await dueTimes("catch-all");
    expect(caughtUp("catch-all").length).toBeGreaterThanOrEqual(4);
    expect(missed("catch-all", all).length).toBeGreaterThanOrEqual(4);
    const gaps = all.slice(1).map((due, index) => due - (all[index] as number));
    expect(new Set(gaps)).toEqual(new Set([1_000]));

    // none: nothing ran for the downtime.
    const none = await dueTimes("catch-none");
    expect(caughtUp("catch-none")).toHaveLength(0);
    expect(missed("catch-none", none)).toHaveLength(0);
    expect(new Set([...all, ...latest, ...none].map((due) => due % 1_000))).toEqual(new Set([0]));
  });
});
