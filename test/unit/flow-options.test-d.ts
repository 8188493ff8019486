import { describe, expectTypeOf, it } from "vitest";
import { defineFunction, z } from "../../runtime/index";

describe("flow-control option types", () => {
  it("types a limit's key function from the parsed input", () => {
    defineFunction({
      input: z.object({ tenantId: z.string(), size: z.number().default(1) }),
      concurrencyLimit: {
        limit: 2,
        key: (input) => {
          expectTypeOf(input).toEqualTypeOf<{ tenantId: string; size: number }>();
          return input.tenantId;
        },
      },
      rateLimit: { limit: 10, period: "1s", key: (input) => input.size },
      async handler() {},
    });
    defineFunction({
      input: z.object({ tenantId: z.string() }),
      // @ts-expect-error a key must be a string or a number
      concurrencyLimit: { limit: 2, key: (input) => ({ tenant: input.tenantId }) },
      async handler() {},
    });
  });
});
