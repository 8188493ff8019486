// The Symfony article's email.subscribers listener: on comment.created, mail every subscriber of
// the post (but not the comment's author) and record each mail in sent_mail. It has its own
// consumer on the events stream, so its retries and dead letters do not touch other listeners.

import { ne } from "drizzle-orm";
import { defineFunction, z } from "../../runtime";
import { sentMail } from "../../schema/app";
import { commentCreated } from "./_events";

export default defineFunction({
  description: "Mail the subscribers of a post about a new comment",
  on: commentCreated,
  input: commentCreated.schema,
  output: z.object({ sent: z.number().int() }),
  retry: { attempts: 5, backoff: ["1s", "10s", "1m"] },
  async handler({ postId, author, body }, ctx) {
    // A relational query: ctx.db is typed with schema/app.ts, relations included.
    const post = await ctx.db.query.posts.findFirst({
      columns: { title: true },
      where: (post, { eq }) => eq(post.id, postId),
      with: { subscribers: { columns: { email: true }, where: (subscriber) => ne(subscriber.email, author) } },
    });
    const subscribers = post?.subscribers ?? [];
    if (subscribers.length === 0) return { sent: 0 };
    const subject = `New comment on "${post?.title ?? `post ${postId}`}"`;
    await ctx.db.insert(sentMail).values(subscribers.map(({ email }) => ({ recipient: email, subject, body })));
    ctx.log.info({ postId, recipients: subscribers.length }, "Subscribers mailed.");
    return { sent: subscribers.length };
  },
});
