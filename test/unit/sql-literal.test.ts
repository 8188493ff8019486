import { describe, expect, it } from "vitest";
import { inlineParameters, sqlLiteral } from "../../runtime/db/sql-literal";

describe("sqlLiteral", () => {
  it("writes NULL, numbers, booleans and escaped strings", () => {
    expect(sqlLiteral(null)).toBe("NULL");
    expect(sqlLiteral(undefined)).toBe("NULL");
    expect(sqlLiteral(42)).toBe("42");
    expect(sqlLiteral(-1.5)).toBe("-1.5");
    expect(sqlLiteral(true)).toBe("true");
    expect(sqlLiteral("it's")).toBe("E'it''s'");
    expect(sqlLiteral("a\\'); drop table x; --")).toBe("E'a\\\\''); drop table x; --'");
  });

  it("refuses values a literal cannot carry", () => {
    expect(() => sqlLiteral(Number.NaN)).toThrow(/NaN/);
    expect(() => sqlLiteral("a\u0000b")).toThrow(/U\+0000/);
  });
});

describe("inlineParameters", () => {
  it("replaces each placeholder by its parameter's literal, $10 included", () => {
    const params = Array.from({ length: 10 }, (_, index) => `v${index + 1}`);
    expect(inlineParameters("select $1, $10::jsonb, $2", params)).toBe("select E'v1', E'v10'::jsonb, E'v2'");
  });

  it("refuses a placeholder without a parameter", () => {
    expect(() => inlineParameters("select $2", ["one"])).toThrow(/\$2/);
  });
});
