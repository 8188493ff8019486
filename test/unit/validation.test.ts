import { describe, expect, it } from "vitest";
import { z } from "zod";
import { parseInput, parseJsonBody, parseOutput } from "../../runtime/invocation/validation";

describe("input and output validation", () => {
  const schema = z.object({ to: z.array(z.email()), subject: z.string() });

  it("returns the parsed value", () => {
    expect(parseInput(z.object({ n: z.coerce.number() }), { n: "3" }, "f")).toEqual({ n: 3 });
  });

  it("reports each issue with its path", () => {
    try {
      parseInput(schema, { to: ["nope"], subject: 1 }, "send-mail");
      throw new Error("expected a refusal");
    } catch (error) {
      const failure = error as { code: string; message: string; issues: unknown[] };
      expect(failure.code).toBe("E_INPUT_INVALID");
      expect(failure.message).toMatch(/^input for send-mail is invalid: to\.0: .+; subject: /);
      expect(failure.issues).toEqual([
        expect.objectContaining({ path: ["to", 0], code: "invalid_format" }),
        expect.objectContaining({ path: ["subject"], code: "invalid_type" }),
      ]);
    }
  });

  it("treats a missing body as {} when the schema wants an object", () => {
    expect(parseInput(z.object({ n: z.number().default(1) }), undefined, "f")).toEqual({ n: 1 });
    expect(parseInput(z.string().optional(), undefined, "f")).toBeUndefined();
  });

  it("checks output only when a schema is given", () => {
    expect(parseOutput(undefined, { any: 1 }, "f")).toEqual({ any: 1 });
    expect(() => parseOutput(z.object({ ok: z.boolean() }), { ok: "yes" }, "f")).toThrow(
      /f returned a result its output schema refuses: ok/,
    );
  });

  it("decodes bodies: empty, JSON, not JSON, not UTF-8", () => {
    expect(parseJsonBody(new Uint8Array(), "f")).toBeUndefined();
    expect(parseJsonBody(new TextEncoder().encode('{"a":1}'), "f")).toEqual({ a: 1 });
    expect(() => parseJsonBody(new TextEncoder().encode("{a"), "f")).toThrow(/input for f is not valid JSON/);
    expect(() => parseJsonBody(new Uint8Array([0x7b, 0xff, 0x7d]), "f")).toThrow("input for f is not valid UTF-8");
  });
});
