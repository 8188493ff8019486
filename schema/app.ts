import { integer, pgTable, serial, text, timestamp } from "drizzle-orm/pg-core";

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
