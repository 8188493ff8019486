import { describe, expect, it } from "vitest";
import { toCliError } from "../../runtime/cli/output";
import { JetfnError, NonRetryableError } from "../../runtime/support/errors";

describe("the error a CLI command ends with", () => {
  it("is E_INTERNAL, not a handler's failure, for an error without a jetfn code", () => {
    const busy = Object.assign(new Error("listen EADDRINUSE: address already in use 127.0.0.1:4280"), {
      code: "EADDRINUSE",
    });
    expect(toCliError(busy)).toMatchObject({
      code: "E_INTERNAL",
      message: "unexpected failure: listen EADDRINUSE: address already in use 127.0.0.1:4280",
      cause: busy,
    });
    expect(toCliError("a thrown string")).toMatchObject({
      code: "E_INTERNAL",
      message: "unexpected failure: a thrown string",
    });
  });

  it("keeps the code of jetfn's errors, a handler's failure reported by a runtime included", () => {
    expect(toCliError(new JetfnError("E_CONFIG_INVALID", "DATABASE_URL is not set"))).toMatchObject({
      code: "E_CONFIG_INVALID",
      message: "DATABASE_URL is not set",
    });
    expect(toCliError(new JetfnError("E_HANDLER_FAILED", "boom")).code).toBe("E_HANDLER_FAILED");
    expect(toCliError({ code: "E_UNAVAILABLE", message: "no runtime answers" }).code).toBe("E_UNAVAILABLE");
    expect(toCliError(new NonRetryableError("no")).code).toBe("E_NON_RETRYABLE");
  });
});
