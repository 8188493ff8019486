import { describe, expectTypeOf, it } from "vitest";
import {
  type DebounceOptions,
  defineFunction,
  type EnqueueOptions,
  type FlowControlOptions,
  type OutboxJobOptions,
  z,
} from "../../runtime/index";

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

  it("gives ctx.enqueue and enqueueInTransaction the keys client.enqueue has", () => {
    defineFunction({
      input: z.object({ docId: z.number() }),
      async handler({ docId }, ctx) {
        await ctx.enqueue("reindex", { docId }, { debounce: { key: `doc:${docId}`, period: "5s", maxWait: "1m" } });
        await ctx.enqueue("report", {}, { singleton: { key: "nightly" }, delay: "1h", priority: 2 });
        // @ts-expect-error a debounce needs its period
        await ctx.enqueue("reindex", { docId }, { debounce: { key: "doc" } });
        // @ts-expect-error a singleton key is an object, as for client.enqueue
        await ctx.enqueue("report", {}, { singleton: "nightly" });
      },
    });
    expectTypeOf<OutboxJobOptions["debounce"]>().toEqualTypeOf<DebounceOptions | undefined>();
    expectTypeOf<EnqueueOptions["singleton"]>().toEqualTypeOf<FlowControlOptions["singleton"]>();
  });
});
