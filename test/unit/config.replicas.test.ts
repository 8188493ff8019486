import { expect, it } from "vitest";
import { resolveConfig } from "../../runtime/config";

it("keeps one replica and no placement tags by default", () => {
  expect(resolveConfig({}, {}).replication).toEqual({ replicas: 1, placementTags: [] });
});

it("reads JETFN_REPLICAS and the comma-separated JETFN_PLACEMENT_TAGS", () => {
  const config = resolveConfig({}, { JETFN_REPLICAS: "3", JETFN_PLACEMENT_TAGS: "region:eu, ssd" });
  expect(config.replication).toEqual({ replicas: 3, placementTags: ["region:eu", "ssd"] });
  expect(Object.isFrozen(config.replication)).toBe(true);
  expect(resolveConfig({ replicas: 5 }, { JETFN_REPLICAS: "3" }).replication.replicas).toBe(5);
});

it.each(["0", "2", "4", "7", "-1"])("refuses JETFN_REPLICAS=%s with E_CONFIG_INVALID", (replicas) => {
  expect(() => resolveConfig({}, { JETFN_REPLICAS: replicas })).toThrow(
    expect.objectContaining({ code: "E_CONFIG_INVALID", message: expect.stringContaining("JETFN_REPLICAS") }),
  );
});

it("refuses a JETFN_REPLICAS that is not a whole number", () => {
  expect(() => resolveConfig({}, { JETFN_REPLICAS: "three" })).toThrow(/JETFN_REPLICAS must be an integer/);
});
