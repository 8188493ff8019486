import { describe, expect, it } from "vitest";
import { storableJson } from "../../runtime/db/storable-json";

describe("JSON Postgres jsonb can hold", () => {
  it("leaves ordinary JSON alone", () => {
    const value = { a: [1, "two", null], emoji: "😀", quote: 'say "hi"', slash: "a\\u0000b" };
    expect(JSON.parse(storableJson(value))).toEqual(value);
  });

  it("replaces NUL and lone surrogates, keeping paired ones", () => {
    expect(JSON.parse(storableJson({ s: "a\u0000b" }))).toEqual({ s: "a\ufffdb" });
    expect(JSON.parse(storableJson({ s: "x\ud800y" }))).toEqual({ s: "x\ufffdy" });
    expect(JSON.parse(storableJson({ s: "x\udfffy" }))).toEqual({ s: "x\ufffdy" });
    expect(JSON.parse(storableJson({ s: "pair \ud83d\ude00" }))).toEqual({ s: "pair 😀" });
  });

  it("writes undefined as null", () => {
    expect(storableJson(undefined)).toBe("null");
  });
});
