import { execFile } from "node:child_process";
import type { CliProcess } from "../../helpers/cli";

/**
 * The environment that makes a `jetfn start` runtime listen for an inspector on a free loopback
 * port, so a test can force its garbage collection and read its heap (memoryAfterGc).
 */
export function inspectableEnv(): NodeJS.ProcessEnv {
  return { NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ""} --inspect=127.0.0.1:0`.trim() };
}

/** A runtime's memory right after a forced full garbage collection, in MiB. */
export interface MemoryAfterGc {
  /** V8 heap in use: what the process still holds, without the garbage not yet collected. */
  heapUsedMiB: number;
  /** Resident memory, heap slack V8 keeps or returns included. */
  rssMiB: number;
  /** Memory V8 holds for its young generation (it grows under a high allocation rate, up to a cap). */
  youngMiB: number;
  /** Memory V8 holds for its heap, young generation and free pages included. */
  heapTotalMiB: number;
  /** Memory outside V8's heap that JavaScript objects still hold: buffers (message bytes), mostly. */
  externalMiB: number;
}

// Run by a separate node process (Node 20 has WebSocket only behind a flag): over the inspector
// protocol, a full collection (V8 also returns the pages it can), then process.memoryUsage().
const PROBE = `
const ws = new WebSocket(process.argv[1]);
const waiting = new Map();
let next = 0;
const call = (method, params = {}) => new Promise((resolve, reject) => {
  waiting.set(++next, { resolve, reject });
  ws.send(JSON.stringify({ id: next, method, params }));
});
ws.onmessage = (event) => {
  const answer = JSON.parse(event.data);
  const call = waiting.get(answer.id);
  waiting.delete(answer.id);
  if (answer.error) call?.reject(new Error(answer.error.message));
  else call?.resolve(answer.result);
};
ws.onerror = () => { console.error("inspector connection failed"); process.exit(1); };
ws.onopen = async () => {
  await call("HeapProfiler.collectGarbage");
  const expression = "JSON.stringify({ ...process.memoryUsage(), young: process.getBuiltinModule('v8').getHeapSpaceStatistics().find((space) => space.space_name === 'new_space')?.space_size ?? 0 })";
  const usage = await call("Runtime.evaluate", { expression, returnByValue: true });
  process.stdout.write(usage.result.value);
  ws.close();
};`;

/** Forces a full garbage collection in a runtime started with inspectableEnv(), then reads its memory. */
export async function memoryAfterGc(runtime: CliProcess): Promise<MemoryAfterGc> {
  const url = /Debugger listening on (ws:\/\/\S+)/.exec(runtime.output())?.[1];
  if (!url) throw new Error("the runtime has no inspector (start it with inspectableEnv())");
  const flags = typeof WebSocket === "undefined" ? ["--experimental-websocket"] : [];
  const stdout = await new Promise<string>((resolve, reject) => {
    execFile(process.execPath, [...flags, "-e", PROBE, url], { timeout: 60_000 }, (error, out, err) =>
      error ? reject(new Error(`${error.message}: ${err}`)) : resolve(out),
    );
  });
  const usage = JSON.parse(stdout) as NodeJS.MemoryUsage & { young: number };
  const mib = (bytes: number) => bytes / 1048576;
  return {
    heapUsedMiB: mib(usage.heapUsed),
    rssMiB: mib(usage.rss),
    youngMiB: mib(usage.young),
    heapTotalMiB: mib(usage.heapTotal),
    externalMiB: mib(usage.external),
  };
}
