import { describe, expect, it } from "vitest";
import { waitSpec } from "../../runtime/invocation/steps";
import { parseDuration } from "../../runtime/support/duration";

const YEAR = 366 * 86_400_000;
const spec = (options: unknown) => waitSpec("shipment", options, (timeout) => parseDuration(timeout as never), YEAR);

describe("ctx.waitForEvent's options", () => {
  it("sort the match's paths, keeping each value with its path", () => {
    const before = Date.now();
    const wait = spec({
      event: "shipment.dispatched",
      match: { orderId: "o_81", "customer.tier": "pro", n: 2 },
      timeout: "7d",
    });
    expect(wait).toMatchObject({
      event: "shipment.dispatched",
      paths: ["customer.tier", "n", "orderId"],
      values: ["pro", 2, "o_81"],
    });
    expect(wait.timeoutAt - before).toBeGreaterThanOrEqual(7 * 86_400_000);
    expect(spec({ event: { kind: "jetfn.event", name: "a.b" }, timeout: 1_000 })).toMatchObject({
      paths: [],
      values: [],
    });
  });

  it.each([
    [undefined, "takes { event, match?, timeout }"],
    [{ event: "shipment.*", timeout: "1s" }, "no wildcards"],
    [{ event: "", timeout: "1s" }, "no wildcards"],
    [{ event: "a", match: { x: { y: 1 } }, timeout: "1s" }, "match.x is a string, a number, a boolean or null"],
    [{ event: "a", match: { x: Number.NaN }, timeout: "1s" }, "match.x is a string"],
    [{ event: "a", match: ["x"], timeout: "1s" }, "flat object"],
    [{ event: "a", match: { "x..y": 1 }, timeout: "1s" }, "not a dotted path"],
    [
      { event: "a", match: Object.fromEntries([...Array(9).keys()].map((n) => [`k${n}`, n])), timeout: "1s" },
      "up to 8",
    ],
    [{ event: "a", match: { x: "y".repeat(1_100) }, timeout: "1s" }, "at most 1024 bytes"],
    [{ event: "a", match: { x: "é".repeat(300), y: "é".repeat(300) }, timeout: "1s" }, "at most 1024 bytes"],
    [{ event: "a", match: { x: "a\u0000b" }, timeout: "1s" }, "cannot store"],
    [{ event: "a" }, "needs a timeout"],
    [{ event: "a", timeout: "400d" }, "at most a year"],
    [{ event: "a", timeout: 0 }, "more than 0"],
    [{ event: "a", timeout: "soon" }, "timeout:"],
  ])("refuse %j with E_STEP_INVALID", (options, message) => {
    expect(() => spec(options)).toThrow(
      expect.objectContaining({ code: "E_STEP_INVALID", message: expect.stringContaining(message) }),
    );
  });
});
