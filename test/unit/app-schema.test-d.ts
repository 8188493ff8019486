import { describe, expectTypeOf, it } from "vitest";
import { defineFunction, type RegisteredSchema, z } from "../../runtime/index";
import type * as appSchema from "../../schema/app";

// schema/app.ts registers itself (declare module "jetfn" { interface Register { schema } }), so every
// handler's ctx.db knows its tables and relations.

describe("ctx.db typed with the registered app schema", () => {
  it("is the schema module's type", () => {
    expectTypeOf<RegisteredSchema>().toEqualTypeOf<typeof appSchema>();
  });

  it("types relational queries, and refuses unknown tables, relations and columns", () => {
    defineFunction({
      input: z.object({ postId: z.number() }),
      async handler({ postId }, ctx) {
        const post = await ctx.db.query.posts.findFirst({
          where: (post, { eq }) => eq(post.id, postId),
          with: { comments: true, commentCount: true },
        });
        expectTypeOf(post?.comments[0]?.author).toEqualTypeOf<string | undefined>();
        expectTypeOf(post?.commentCount?.count).toEqualTypeOf<number | undefined>();
        // @ts-expect-error no table of that name
        ctx.db.query.nonexistent;
        // @ts-expect-error posts have no relation of that name
        await ctx.db.query.posts.findMany({ with: { authors: true } });
        // @ts-expect-error comments have no column of that name
        await ctx.db.query.comments.findMany({ columns: { rating: true } });
        return null;
      },
    });
  });
});
