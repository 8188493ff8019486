// A second, independent listener of comment.created: keeps the number of comments per post.
// Effectively-once per event (the invocation's record commits with the update), so a redelivered
// event never counts twice.

import { sql } from "drizzle-orm";
import { defineFunction, z } from "../../runtime";
import { commentCounts } from "../../schema/app";
import { commentCreated } from "./_events";

export default defineFunction({
  description: "Count the comments of each post",
  on: "comment.created",
  input: commentCreated.schema,
  output: z.object({ count: z.number().int() }),
  async handler({ postId, commentId }, ctx) {
    const [row] = await ctx.db
      .insert(commentCounts)
      .values({ postId, count: 1, lastCommentId: commentId })
      .onConflictDoUpdate({
        target: commentCounts.postId,
        set: {
          count: sql`${commentCounts.count} + 1`,
          lastCommentId: sql`greatest(${commentCounts.lastCommentId}, excluded.last_comment_id)`,
          updatedAt: sql`now()`,
        },
      })
      .returning({ count: commentCounts.count });
    return { count: (row as { count: number }).count };
  },
});
