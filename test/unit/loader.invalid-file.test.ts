import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadFunctionFile, loadFunctionFiles } from "../../runtime/deploy/loader";

let dir: string;

async function file(name: string, source: string): Promise<string> {
  const target = path.join(dir, name);
  await writeFile(target, source);
  return target;
}

const GOOD =
  'import { defineFunction, z } from "jetfn";\nexport default defineFunction({ input: z.object({}), async handler() { return import.meta.url; } });\n';

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "jetfn-loader-"));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("loading function files", () => {
  it("loads a definition and lists the local files it was built from", async () => {
    await file("_shared.ts", "export const x = 1;\n");
    const good = await file(
      "good.ts",
      `import { x } from "./_shared";\n${GOOD.replace("return import.meta.url", "return { url: import.meta.url, x }")}`,
    );
    const result = await loadFunctionFile(good);
    expect(result.ok).toBe(true);
    expect(result.dependencies.sort()).toEqual([path.join(dir, "_shared.ts"), good]);
    if (result.ok)
      await expect(result.definition.spec.handler({}, {} as never)).resolves.toEqual({ url: `file://${good}`, x: 1 });
  });

  it.each([
    ["syntax.ts", "export default {", /syntax\.ts:1:17: Expected identifier but found end of file/],
    ["throws.ts", 'throw new RangeError("nope");', /throws\.ts threw while loading: RangeError: nope/],
    ["empty.ts", "export const a = 1;", /has no default export/],
    ["plain.ts", "export default 42;", /is not a defineFunction\(\.\.\.\) definition \(got number\)/],
    ["missing-import.ts", 'import { x } from "./nowhere";\nexport default x;', /Could not resolve "\.\/nowhere"/],
    ["top-level-await.ts", "await 1;\nexport default 1;", /Top-level await/],
  ])("refuses %s with a precise reason", async (name, source, reason) => {
    const result = await loadFunctionFile(await file(name, source));
    expect(result.ok).toBe(false);
    if (!result.ok) expect(result.error.message).toMatch(reason);
  });

  it("loads the good files of a batch even when another one is broken", async () => {
    const good = await file("batch-good.ts", GOOD);
    const bad = await file("batch-bad.ts", "export default {");
    const results = await loadFunctionFiles([good, bad]);
    expect(results.map((result) => result.ok)).toEqual([true, false]);
  });

  it("stops a file whose top-level code never ends, and loads the rest of its batch", async () => {
    const endless = await file("endless.ts", `let n = 0;\nwhile (n >= 0) n = (n + 1) % 10;\n${GOOD}`);
    const good = await file("after-endless.ts", GOOD);
    const begun = performance.now();
    const results = await loadFunctionFiles([endless, good], { timeoutMs: 200 });
    expect(performance.now() - begun).toBeLessThan(10_000);
    expect(results.map((result) => result.ok)).toEqual([false, true]);
    const [refused] = results;
    if (refused && !refused.ok) {
      expect(refused.error.code).toBe("E_FUNCTION_LOAD_FAILED");
      expect(refused.error.message).toMatch(/endless\.ts did not finish loading within 200ms/);
    }
  });
});
