import { relations } from "drizzle-orm";
import { index, integer, pgTable, primaryKey, serial, text, timestamp } from "drizzle-orm/pg-core";

// The example app's tables, declared once: drizzle-kit generates their migrations from this file
// (drizzle.config.ts, `npx drizzle-kit generate` into drizzle/), `jetfn migrate` applies them after
// jetfn's own, and handlers get `ctx.db` typed with it (the relations make `ctx.db.query.posts`
// answer `with: { comments: true }`).

/** Mails the send-mail function sent: one row per recipient (Photon's MailSender, made accountable). */
export const sentMail = pgTable("sent_mail", {
  id: serial("id").primaryKey(),
  recipient: text("recipient").notNull(),
  subject: text("subject").notNull(),
  body: text("body").notNull().default(""),
  sentAt: timestamp("sent_at", { withTimezone: true, mode: "string" }).notNull().defaultNow(),
});

/** Factorials computed by the factorial function (Gearman's long-running task), kept as reference data. */
export const factorials = pgTable("factorials", {
  n: integer("n").primaryKey(),
  value: text("value").notNull(),
  computedAt: timestamp("computed_at", { withTimezone: true, mode: "string" }).notNull().defaultNow(),
});

/** Blog posts (the Symfony article's example). */
export const posts = pgTable("posts", {
  id: serial("id").primaryKey(),
  title: text("title").notNull(),
  createdAt: timestamp("created_at", { withTimezone: true, mode: "string" }).notNull().defaultNow(),
});

/** Comments on posts; saving one emits `comment.created`. */
export const comments = pgTable(
  "comments",
  {
    id: serial("id").primaryKey(),
    postId: integer("post_id")
      .notNull()
      .references(() => posts.id, { onDelete: "cascade" }),
    author: text("author").notNull(),
    body: text("body").notNull(),
    createdAt: timestamp("created_at", { withTimezone: true, mode: "string" }).notNull().defaultNow(),
  },
  // A post's comments are read by post, and deleting a post cascades through them.
  (table) => [index("comments_post_idx").on(table.postId)],
);

/** Who is mailed when a post gets a comment. */
export const postSubscribers = pgTable(
  "post_subscribers",
  {
    postId: integer("post_id")
      .notNull()
      .references(() => posts.id, { onDelete: "cascade" }),
    email: text("email").notNull(),
  },
  (table) => [primaryKey({ columns: [table.postId, table.email] })],
);

/** Comments per post, kept by the blog.count-comments listener. */
export const commentCounts = pgTable("comment_counts", {
  postId: integer("post_id")
    .primaryKey()
    .references(() => posts.id, { onDelete: "cascade" }),
  count: integer("count").notNull().default(0),
  lastCommentId: integer("last_comment_id"),
  updatedAt: timestamp("updated_at", { withTimezone: true, mode: "string" }).notNull().defaultNow(),
});

export const postsRelations = relations(posts, ({ many, one }) => ({
  comments: many(comments),
  subscribers: many(postSubscribers),
  commentCount: one(commentCounts),
}));

export const commentsRelations = relations(comments, ({ one }) => ({
  post: one(posts, { fields: [comments.postId], references: [posts.id] }),
}));

export const postSubscribersRelations = relations(postSubscribers, ({ one }) => ({
  post: one(posts, { fields: [postSubscribers.postId], references: [posts.id] }),
}));

export const commentCountsRelations = relations(commentCounts, ({ one }) => ({
  post: one(posts, { fields: [commentCounts.postId], references: [posts.id] }),
}));

// `ctx.db` in every handler is typed with this module (the runtime loads it too: JETFN_SCHEMA).
declare module "jetfn" {
  interface Register {
    schema: typeof import("./app");
  }
}
