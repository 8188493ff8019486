import { mkdtemp, rm, unlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Runtime } from "../../runtime/runtime";
import type { JetfnClient } from "../../runtime/sdk/client";
import { createTestEnvironment, eventually, type TestEnvironment } from "../helpers/environment";
import type { CapturedLogger } from "../helpers/logs";

let env: TestEnvironment;
let client: JetfnClient;
let runtime: Runtime & { logs: CapturedLogger };
let dir: string;

function versionSource(version: string, delayMs = 0): string {
  return `import { defineFunction, z } from "jetfn";
export default defineFunction({
  input: z.object({}),
  async handler() {
    await new Promise((resolve) => setTimeout(resolve, ${delayMs}));
    return { version: "${version}" };
  },
});
`;
}

beforeAll(async () => {
  env = await createTestEnvironment();
  dir = await mkdtemp(path.join(tmpdir(), "jetfn-functions-"));
  await writeFile(path.join(dir, "greet.ts"), versionSource("v1"));
  await writeFile(path.join(dir, "broken-syntax.ts"), "export default defineFunction({ input: ");
  await writeFile(path.join(dir, "throws.ts"), 'throw new Error("cannot load me");\n');
  await writeFile(path.join(dir, "no-default.ts"), "export const x = 1;\n");
  await writeFile(path.join(dir, "not-a-function.ts"), "export default { handler() {} };\n");
  await writeFile(path.join(dir, "Bad Name.ts"), versionSource("bad"));
  await writeFile(
    path.join(dir, "bad-option.ts"),
    'import { defineFunction, z } from "jetfn";\nexport default defineFunction({ input: z.object({}), concurrency: 0, async handler() { return 1; } });\n',
  );
  runtime = await env.startRuntime({ functionsDir: dir, watch: true });
  client = await env.client();
});

afterAll(async () => {
  await env?.close();
  await rm(dir, { recursive: true, force: true });
});

describe("deploying by file", () => {
  it("deploys good files and refuses each broken one in one clear log line", () => {
    expect(runtime.registry.names()).toEqual(["greet"]);
    const refused = runtime.logs.lines.filter((line) => line.level === 50 && typeof line.file === "string");
    const byFile = Object.fromEntries(refused.map((line) => [path.basename(line.file as string), line.msg as string]));
    expect(byFile["broken-syntax.ts"]).toMatch(/broken-syntax\.ts:1:\d+: Unexpected end of file/);
    expect(byFile["throws.ts"]).toContain("threw while loading: Error: cannot load me");
    expect(byFile["no-default.ts"]).toContain("has no default export");
    expect(byFile["not-a-function.ts"]).toContain("is not a defineFunction(...) definition");
    expect(byFile["Bad Name.ts"]).toContain('"Bad Name" is not a valid function name');
    expect(byFile["bad-option.ts"]).toContain("option concurrency must be an integer from 1");
    expect(refused).toHaveLength(6);
  });

  it("deploys a file added while running", async () => {
    await writeFile(path.join(dir, "added.ts"), versionSource("added"));
    const result = await eventually(() => client.call("added", {}).catch(() => undefined));
    expect(result).toEqual({ version: "added" });
  });

  it("redeploys an edited file; an invocation in flight finishes on the old code", async () => {
    await writeFile(path.join(dir, "greet.ts"), versionSource("v2", 1_500));
    await eventually(async () => ((await client.call("greet", {})) as { version: string }).version === "v2");
    const inFlight = client.call("greet", {});
    await new Promise((resolve) => setTimeout(resolve, 200));
    await writeFile(path.join(dir, "greet.ts"), versionSource("v3"));
    await eventually(async () => ((await client.call("greet", {})) as { version: string }).version === "v3");
    await expect(inFlight).resolves.toEqual({ version: "v2" });
  });

  it("keeps the running version when an edit breaks the file", async () => {
    await writeFile(path.join(dir, "greet.ts"), "export default defineFunction({");
    await eventually(() => runtime.logs.lines.some((line) => String(line.msg).includes("keeps running")));
    await expect(client.call("greet", {})).resolves.toEqual({ version: "v3" });
    await writeFile(path.join(dir, "greet.ts"), versionSource("v4"));
    await eventually(async () => ((await client.call("greet", {})) as { version: string }).version === "v4");
  });

  it("undeploys a deleted file; its queued jobs wait untouched until it returns", async () => {
    await unlink(path.join(dir, "added.ts"));
    await eventually(
      async () =>
        (await client.call("added", {}).catch((error: { code: string }) => error.code)) === "E_FUNCTION_NOT_FOUND",
    );
    const job = await client.enqueue("added", {});
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect((await client.status(job.id)).status).toBe("pending");
    await writeFile(path.join(dir, "added.ts"), versionSource("back"));
    await expect(client.result(job.id, { timeout: "10s" })).resolves.toEqual({ version: "back" });
  });

  it("deploys a fixed file that was broken at start", async () => {
    await writeFile(path.join(dir, "throws.ts"), versionSource("fixed"));
    await expect(eventually(() => client.call("throws", {}).catch(() => undefined))).resolves.toEqual({
      version: "fixed",
    });
  });

  it("redeploys a function when a helper it imports changes", async () => {
    await writeFile(path.join(dir, "_helper.ts"), 'export const word = "alpha";\n');
    await writeFile(
      path.join(dir, "uses-helper.ts"),
      'import { defineFunction, z } from "jetfn";\nimport { word } from "./_helper";\nexport default defineFunction({ input: z.object({}), async handler() { return { word }; } });\n',
    );
    await expect(eventually(() => client.call("uses-helper", {}).catch(() => undefined))).resolves.toEqual({
      word: "alpha",
    });
    expect(runtime.registry.names()).not.toContain("_helper");
    await writeFile(path.join(dir, "_helper.ts"), 'export const word = "beta";\n');
    await eventually(async () => ((await client.call("uses-helper", {})) as { word: string }).word === "beta");
  });
});
