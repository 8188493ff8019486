// The Symfony article's createComment(): save the comment and persist a `comment.created` event in
// the same transaction instead of mailing subscribers during the request. The event leaves through
// the outbox only if the comment commits; the listeners do the slow work.

import { eq } from "drizzle-orm";
import { defineFunction, NonRetryableError, z } from "../../runtime";
import { comments, posts } from "../../schema/app";
import { commentCreated } from "./_events";

export default defineFunction({
  description: "Save a comment on a post and emit comment.created",
  input: z.object({
    postId: z.number().int().positive(),
    author: z.string().min(1).max(200),
    body: z.string().min(1).max(10_000),
  }),
  output: z.object({ commentId: z.number().int() }),
  async handler({ postId, author, body }, ctx) {
    const [post] = await ctx.db.select({ id: posts.id }).from(posts).where(eq(posts.id, postId));
    if (!post) throw new NonRetryableError(`post ${postId} does not exist`);
    const [comment] = await ctx.db.insert(comments).values({ postId, author, body }).returning({ id: comments.id });
    const commentId = (comment as { id: number }).id;
    await ctx.emit(commentCreated, { commentId, postId, author, body });
    return { commentId };
  },
});
