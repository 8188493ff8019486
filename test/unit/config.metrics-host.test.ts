import { expect, it } from "vitest";
import { DEFAULT_METRICS_HOST, resolveConfig } from "../../runtime/config";

it("listens on loopback unless JETFN_METRICS_HOST or the option says otherwise", () => {
  expect(resolveConfig({}, {}).metricsHost).toBe(DEFAULT_METRICS_HOST);
  expect(DEFAULT_METRICS_HOST).toBe("127.0.0.1");
  expect(resolveConfig({}, { JETFN_METRICS_HOST: " 0.0.0.0 " }).metricsHost).toBe("0.0.0.0");
  expect(resolveConfig({ metricsHost: "::" }, { JETFN_METRICS_HOST: "0.0.0.0" }).metricsHost).toBe("::");
});
