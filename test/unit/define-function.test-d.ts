import { describe, expectTypeOf, it } from "vitest";
import { createClient, defineFunction, type InputOf, type JetfnClient, type OutputOf, z } from "../../runtime/index";

const add = defineFunction({
  input: z.object({ a: z.number(), b: z.number().default(0) }),
  output: z.object({ sum: z.number() }),
  async handler(input, ctx) {
    // The handler receives the parsed input: defaults applied.
    expectTypeOf(input).toEqualTypeOf<{ a: number; b: number }>();
    expectTypeOf(ctx.attempt).toEqualTypeOf<number>();
    return { sum: input.a + input.b };
  },
});

const untyped = defineFunction({
  input: z.object({ text: z.string() }),
  async handler({ text }) {
    return text.length;
  },
});

describe("defineFunction types", () => {
  it("types callers' input (before defaults) and the parsed output", () => {
    expectTypeOf<InputOf<typeof add>>().toEqualTypeOf<{ a: number; b?: number | undefined }>();
    expectTypeOf<OutputOf<typeof add>>().toEqualTypeOf<{ sum: number }>();
    expectTypeOf<OutputOf<typeof untyped>>().toEqualTypeOf<unknown>();
  });

  it("refuses a handler whose result does not match the output schema", () => {
    defineFunction({
      input: z.object({}),
      output: z.object({ ok: z.boolean() }),
      // @ts-expect-error: ok must be a boolean
      async handler() {
        return { ok: "yes" };
      },
    });
  });

  it("checks calls against a map of functions", async () => {
    const client = (await createClient<{ add: typeof add }>({})) as JetfnClient<{ add: typeof add }>;
    expectTypeOf(client.call("add", { a: 1 })).toEqualTypeOf<Promise<{ sum: number }>>();
    // @ts-expect-error: a must be a number
    void client.call("add", { a: "one" });
    // @ts-expect-error: no function of that name in the map
    void client.call("ad", { a: 1 });
  });
});
