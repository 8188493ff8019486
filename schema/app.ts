import { integer, pgTable, primaryKey, serial, text, timestamp } from "drizzle-orm/pg-core";

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
export const comments = pgTable("comments", {
  id: serial("id").primaryKey(),
  postId: integer("post_id")
    .notNull()
    .references(() => posts.id, { onDelete: "cascade" }),
  author: text("author").notNull(),
  body: text("body").notNull(),
  createdAt: timestamp("created_at", { withTimezone: true, mode: "string" }).notNull().defaultNow(),
});

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
