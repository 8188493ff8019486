// The Symfony article's email.subscribers listener: on comment.created, mail every subscriber of
// the post (but not the comment's author) and record each mail in sent_mail. It has its own
// consumer on the events stream, so its retries and dead letters do not touch other listeners.

import { and, eq, ne } from "drizzle-orm";
import { defineFunction, z } from "../../runtime";
import { postSubscribers, posts, sentMail } from "../../schema/app";
import { commentCreated } from "./_events";

export default defineFunction({
  description: "Mail the subscribers of a post about a new comment",
  on: commentCreated,
  input: commentCreated.schema,
  output: z.object({ sent: z.number().int() }),
  retry: { attempts: 5, backoff: ["1s", "10s", "1m"] },
  async handler({ postId, author, body }, ctx) {
    const [post] = await ctx.db.select({ title: posts.title }).from(posts).where(eq(posts.id, postId));
    const subscribers = await ctx.db
      .select({ email: postSubscribers.email })
      .from(postSubscribers)
      .where(and(eq(postSubscribers.postId, postId), ne(postSubscribers.email, author)));
    if (subscribers.length === 0) return { sent: 0 };
    const subject = `New comment on "${post?.title ?? `post ${postId}`}"`;
    await ctx.db.insert(sentMail).values(subscribers.map(({ email }) => ({ recipient: email, subject, body })));
    ctx.log.info({ postId, recipients: subscribers.length }, "Subscribers mailed.");
    return { sent: subscribers.length };
  },
});
