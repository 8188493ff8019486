import { expect, it } from "vitest";
import { MIN_DUPLICATE_WINDOW_MS, resolveConfig } from "../../runtime/config";

// A singleton's unconfirmed publish is published again under its id for up to half a minute; a
// shorter duplicate window would let that second publish store a second copy of the job.

it("refuses a duplicate window under a minute with E_CONFIG_INVALID", () => {
  expect(() => resolveConfig({ duplicateWindow: "10s" }, {})).toThrow(
    expect.objectContaining({ code: "E_CONFIG_INVALID", message: expect.stringContaining("at least 1m") }),
  );
});

it("takes a minute or more, and two minutes by default", () => {
  expect(resolveConfig({ duplicateWindow: "1m" }, {}).duplicateWindowMs).toBe(MIN_DUPLICATE_WINDOW_MS);
  expect(resolveConfig({}, {}).duplicateWindowMs).toBe(120_000);
});
