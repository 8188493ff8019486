import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { createDeployer, type Deployer } from "../../runtime/deploy/deployer";
import { createEmitter } from "../../runtime/triggers/events";
import { captureLogs } from "../helpers/logs";

const REDEPLOYS = Number(process.env.REDEPLOYS ?? 200);
// Each version carries its own ~250 kB of objects: 200 leaked versions would hold ~50 MB.
const PAYLOAD_ITEMS = 10_000;

let dir: string;
let deployer: Deployer;
const events = createEmitter();

function source(version: number): string {
  return `import { defineFunction, z } from "jetfn";
const payload = Array.from({ length: ${PAYLOAD_ITEMS} }, (_, index) => ({ index, version: ${version} }));
export default defineFunction({
  input: z.object({}),
  async handler() { return { version: ${version}, size: payload.length }; },
});
`;
}

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "jetfn-memory-"));
  await writeFile(path.join(dir, "heavy.ts"), source(0));
  deployer = createDeployer({
    functionsDir: dir,
    watch: true,
    logger: captureLogs(process.env.TEST_LOGS ? "debug" : "warn").logger,
    events,
    debounceMs: 5,
  });
  await deployer.start();
});

afterAll(async () => {
  await deployer?.close();
  await rm(dir, { recursive: true, force: true });
});

function heapAfterGc(): number {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error("run with --expose-gc (vitest.config.ts passes it)");
  for (let i = 0; i < 3; i++) gc();
  return process.memoryUsage().heapUsed;
}

async function redeploy(version: number): Promise<void> {
  const loaded = new Promise<void>((resolve) => {
    const listener = (): void => {
      if (deployer.registry.get("heavy")?.file && deployer.registry.get("heavy")?.version) {
        events.off("function:loaded", listener);
        resolve();
      }
    };
    events.on("function:loaded", listener);
  });
  await writeFile(path.join(dir, "heavy.ts"), source(version));
  await loaded;
}

it(`keeps memory bounded over ${REDEPLOYS} redeploys of one function`, async () => {
  // Warm up: the first redeploys load esbuild's and chokidar's own state.
  for (let version = 1; version <= 20; version++) await redeploy(version);
  const before = heapAfterGc();
  const firstVersion = deployer.registry.get("heavy")?.version ?? 0;
  for (let version = 21; version < 21 + REDEPLOYS; version++) await redeploy(version);
  const after = heapAfterGc();
  expect((deployer.registry.get("heavy")?.version ?? 0) - firstVersion).toBeGreaterThanOrEqual(REDEPLOYS);
  const result = await deployer.registry.get("heavy")?.definition.spec.handler({}, {} as never);
  expect(result).toEqual({ version: 20 + REDEPLOYS, size: PAYLOAD_ITEMS });
  const growthMb = (after - before) / 1024 / 1024;
  // Leaking every version would grow the heap by ~50 MB; allow a little noise.
  expect(growthMb).toBeLessThan(8);
}, 120_000);
