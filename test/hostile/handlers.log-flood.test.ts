import path from "node:path";
import { Writable } from "node:stream";
import { afterAll, beforeAll, expect, it } from "vitest";
import { createLogger } from "../../runtime/support/logger";
import { createTestEnvironment, FIXTURE_FUNCTIONS, type TestEnvironment } from "../helpers/environment";

// A handler writing 150 MB of log lines in 1.5 s used to block other calls for 1.6 s and leave the
// runtime at 512 MB. Now each handler's lines are cut to a line limit and counted against a budget
// per invocation: past it they are dropped before they are formatted (or, in a worker thread,
// before they cross to the runtime), and one line at the end says how many were dropped.
const HOSTILE_FUNCTIONS = path.resolve(FIXTURE_FUNCTIONS, "../hostile-handlers");
const FLOOD_LINES = process.env.JETFN_FAULTS_FULL ? 1_500 : 500; // of 100 KB each
let env: TestEnvironment;

beforeAll(async () => {
  env = await createTestEnvironment();
});

afterAll(async () => {
  await env?.close();
});

/** A log destination that counts what reaches it and keeps only the lines that are short. */
function countingSink() {
  const sink = { bytes: 0, lines: [] as Record<string, unknown>[] };
  const destination = new Writable({
    write(chunk, _encoding, done) {
      const text = String(chunk);
      sink.bytes += text.length;
      if (text.length < 65_536) sink.lines.push(JSON.parse(text) as Record<string, unknown>);
      done();
    },
  });
  return { sink, logger: createLogger({ level: "info", destination }) };
}

it.each([
  ["log-flood", "in the runtime's thread"],
  ["log-flood-isolated", "in a worker thread"],
])(
  "bounds what %s writes (%s), reports what it dropped, and others keep answering",
  {
    timeout: 120_000,
  },
  async (fn) => {
    const { sink, logger } = countingSink();
    await env.startRuntime({ functionsDir: HOSTILE_FUNCTIONS, logger });
    const client = await env.client();
    await client.call("ping", {});
    await client.call(fn as "log-flood", { lines: 2 });
    const rssBefore = process.memoryUsage().rss;
    const bytesBefore = sink.bytes;

    let flooding = true;
    const flood = client.call(fn as "log-flood", { lines: FLOOD_LINES }, { timeout: "60s" }).finally(() => {
      flooding = false;
    });
    const pings: number[] = [];
    while (flooding) {
      const begun = performance.now();
      await client.call("ping", {});
      pings.push(performance.now() - begun);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    await expect(flood).resolves.toEqual({ lines: FLOOD_LINES });
    const grewMb = (process.memoryUsage().rss - rssBefore) / 1_048_576;

    // The default budget: 1,000 lines and 1 MiB per invocation, 16 KiB per line.
    const written = sink.bytes - bytesBefore;
    expect(written).toBeLessThan(3 * 1_048_576);
    const reports = sink.lines.filter((line) => line.droppedLogLines !== undefined);
    expect(reports).toEqual([
      expect.objectContaining({
        fn,
        attempt: 1,
        invocationId: expect.any(String),
        droppedLogLines: expect.any(Number),
      }),
    ]);
    const report = reports[0] as { droppedLogLines: number; loggedLines: number };
    expect(report.droppedLogLines).toBeGreaterThan(FLOOD_LINES / 2);
    // Each line of the flood was either written (cut, with a marker) or counted as dropped.
    const floodLines = sink.lines.filter(
      (line) => line.invocationId === (reports[0] as { invocationId: string }).invocationId && line !== reports[0],
    );
    expect(floodLines.length).toBeGreaterThan(0);
    expect(String(floodLines[0]?.payload ?? floodLines[0]?.msg)).toContain("…[truncated]");
    // Generous bounds, for a loaded machine: the flood no longer stalls other calls or grows memory for good.
    expect(Math.max(...pings)).toBeLessThan(3_000);
    expect(grewMb).toBeLessThan(150);
  },
);
