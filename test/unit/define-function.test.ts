import { describe, expect, it } from "vitest";
import { z } from "zod";
import { defineFunction, isFunctionDefinition, resolveFunction } from "../../runtime/sdk/define-function";

const valid = { input: z.object({ n: z.number() }), async handler() {} };

function refusal(spec: Record<string, unknown>): string {
  try {
    resolveFunction("demo", "/functions/demo.ts", 1, defineFunction(spec as never));
  } catch (error) {
    expect((error as { code: string }).code).toBe("E_FUNCTION_INVALID");
    return (error as Error).message;
  }
  throw new Error("expected the definition to be refused");
}

describe("defineFunction options, checked at deploy", () => {
  it("resolves defaults", () => {
    const fn = resolveFunction("demo", "/functions/demo.ts", 7, defineFunction(valid));
    expect(fn).toMatchObject({ name: "demo", version: 7, timeoutMs: 30_000, concurrency: 8, retry: { attempts: 3 } });
    expect(fn.isolation).toBe("none");
    expect(fn.sharedCommit).toBe(true);
  });

  it("names the option and why, with the function and file", () => {
    expect(refusal({ ...valid, concurrency: 0 })).toBe(
      "function demo (/functions/demo.ts): option concurrency must be an integer from 1 to 10000, got 0",
    );
    expect(refusal({ ...valid, timeout: "soon" })).toContain('option timeout: "soon" is not a duration');
    expect(refusal({ ...valid, retry: { attempts: -1 } })).toContain("option retry.attempts must be an integer");
    expect(refusal({ ...valid, input: { not: "zod" } })).toContain("option input must be a zod schema");
    expect(refusal({ ...valid, output: 5 })).toContain("option output must be a zod schema");
    expect(refusal({ input: valid.input })).toContain("option handler must be an async function");
    expect(refusal({ ...valid, retries: 3 })).toContain('unknown option "retries"');
    expect(refusal({ ...valid, isolation: "process" })).toContain(
      'option isolation must be "none" or "thread", got "process"',
    );
    expect(refusal({ ...valid, sharedCommit: "no" })).toContain('option sharedCommit must be true or false, got "no"');
  });

  it("recognises definitions by shape, so copies of the runtime agree", () => {
    expect(isFunctionDefinition(defineFunction(valid))).toBe(true);
    expect(isFunctionDefinition({ kind: "jetfn.function", spec: valid })).toBe(true);
    expect(isFunctionDefinition({ handler() {} })).toBe(false);
    expect(isFunctionDefinition(null)).toBe(false);
  });
});
