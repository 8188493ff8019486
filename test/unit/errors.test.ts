import { describe, expect, it } from "vitest";
import { errorKindOf, isJetfnErrorCode, isRetryable, statusOf } from "../../runtime/support/error-codes";
import { JetfnError, NonRetryableError, RetryAfterError, toJetfnError } from "../../runtime/support/errors";

describe("toJetfnError", () => {
  it("wraps plain errors as handler failures, keeping message, stack and cause", () => {
    const thrown = new TypeError("x is undefined");
    const error = toJetfnError(thrown);
    expect(error).toMatchObject({ code: "E_HANDLER_FAILED", message: "x is undefined" });
    expect(error.cause).toBe(thrown);
    expect(error.stack).toBe(thrown.stack);
  });

  it("classifies by name and code, not instanceof (function files may hold their own copies)", () => {
    const foreignNonRetryable = Object.assign(new Error("gone"), {
      name: "NonRetryableError",
      code: "E_NON_RETRYABLE",
    });
    expect(toJetfnError(foreignNonRetryable)).toBeInstanceOf(NonRetryableError);
    const foreignRetryAfter = Object.assign(new Error("later"), { name: "RetryAfterError", delayMs: 500 });
    expect(toJetfnError(foreignRetryAfter)).toMatchObject({ code: "E_RETRY_LATER", delayMs: 500 });
    const coded = Object.assign(new Error("bad"), { code: "E_INPUT_INVALID", issues: [{ path: ["a"], message: "m" }] });
    expect(toJetfnError(coded)).toMatchObject({ code: "E_INPUT_INVALID", issues: [{ path: ["a"], message: "m" }] });
  });

  it("keeps JetfnErrors as they are and describes thrown non-errors", () => {
    const original = new JetfnError("E_HANDLER_TIMEOUT", "slow");
    expect(toJetfnError(original)).toBe(original);
    expect(toJetfnError("just a string")).toMatchObject({
      code: "E_HANDLER_FAILED",
      message: "handler threw a non-error value: just a string",
    });
    expect(new RetryAfterError("later", "2s").delayMs).toBe(2_000);
  });
});

describe("ERROR_CODES lookups", () => {
  it("answer from the declaration", () => {
    expect(statusOf("E_INPUT_INVALID")).toBe(400);
    expect(isRetryable("E_INPUT_INVALID")).toBe(false);
    expect(statusOf("E_DATABASE_UNAVAILABLE")).toBe(503);
    expect(isRetryable("E_DATABASE_UNAVAILABLE")).toBe(true);
  });

  it("treat a string that is no code (an error typed by a cast) as a retryable failure with status 500", () => {
    for (const code of ["E_NO_SUCH_CODE", "toString", "__proto__", "constructor"]) {
      expect(isJetfnErrorCode(code)).toBe(false);
      expect(statusOf(code)).toBe(500);
      expect(isRetryable(code)).toBe(true);
      expect(errorKindOf(code)).toBe("other");
    }
  });
});
