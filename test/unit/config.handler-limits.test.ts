import { expect, it } from "vitest";
import { resolveConfig } from "../../runtime/config";
import { DEFAULT_LOG_LIMITS } from "../../runtime/support/log-budget";

it("reads the handler log budget and the load time limit, with defaults", () => {
  expect(resolveConfig({}, {})).toMatchObject({ logLimits: DEFAULT_LOG_LIMITS, loadTimeoutMs: 10_000 });
  const config = resolveConfig(
    {},
    { JETFN_LOG_LINES: "50", JETFN_LOG_BYTES: "4096", JETFN_LOG_LINE_BYTES: "512", JETFN_LOAD_TIMEOUT: "2s" },
  );
  expect(config).toMatchObject({ logLimits: { lines: 50, bytes: 4_096, lineBytes: 512 }, loadTimeoutMs: 2_000 });
  expect(resolveConfig({ logLines: 7, loadTimeout: "500ms" }, { JETFN_LOG_LINES: "50" })).toMatchObject({
    logLimits: { lines: 7 },
    loadTimeoutMs: 500,
  });
});

it.each([
  ["JETFN_LOG_LINES", "0"],
  ["JETFN_LOG_BYTES", "lots"],
  ["JETFN_LOG_LINE_BYTES", "-1"],
  ["JETFN_LOAD_TIMEOUT", "forever"],
])("refuses %s=%s", (name, value) => {
  expect(() => resolveConfig({}, { [name]: value })).toThrow(expect.objectContaining({ code: "E_CONFIG_INVALID" }));
});

it.each([[{ logLines: 0 }], [{ logBytes: -5 }], [{ logLineBytes: 1.5 }], [{ logLines: Number.NaN }]])(
  "refuses log limits given in code that no variable would be allowed to set: %o",
  (options) => {
    expect(() => resolveConfig(options, {})).toThrow(expect.objectContaining({ code: "E_CONFIG_INVALID" }));
  },
);
