import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { JetfnClient } from "../../runtime/sdk/client";
import { createTestEnvironment, eventually, type TestEnvironment } from "../helpers/environment";

const EXAMPLES = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../functions");

let env: TestEnvironment;
let client: JetfnClient;

beforeAll(async () => {
  env = await createTestEnvironment();
  await env.startRuntime({ functionsDir: EXAMPLES });
  client = await env.client();
});

afterAll(async () => {
  await env?.close();
});

describe("the blog example (the Symfony article's comment.created listeners)", () => {
  it("saves a comment, mails every other subscriber and counts the post's comments", async () => {
    const sql = env.database.sql;
    const [post] = await sql`insert into posts (title) values ('Procrastination') returning id`;
    const postId = post?.id as number;
    await sql`insert into post_subscribers (post_id, email) values
      (${postId}, 'ada@example.com'), (${postId}, 'bob@example.com'), (${postId}, 'cy@example.com')`;

    const first = await client.call("blog.add-comment", { postId, author: "cy@example.com", body: "Great post" });
    expect(first).toMatchObject({ commentId: expect.any(Number) });
    await client.call("blog.add-comment", { postId, author: "dan@example.com", body: "Agreed" });

    const mails = await eventually(async () => {
      const rows = await sql`select recipient, subject, body from sent_mail order by recipient, body`;
      return rows.length >= 5 ? rows : undefined;
    });
    expect(mails.map((mail) => `${mail.recipient}: ${mail.body}`)).toEqual([
      "ada@example.com: Agreed",
      "ada@example.com: Great post",
      "bob@example.com: Agreed",
      "bob@example.com: Great post",
      "cy@example.com: Agreed",
    ]);
    expect(new Set(mails.map((mail) => mail.subject))).toEqual(new Set(['New comment on "Procrastination"']));
    const counts = await eventually(async () => {
      const rows = await sql`select count from comment_counts where post_id = ${postId}`;
      return rows[0]?.count === 2 ? rows : undefined;
    });
    expect(counts).toHaveLength(1);

    // Each listener's writes are audited under its own name.
    const audited = await eventually(async () => {
      const rows = await sql`
        select distinct table_name, function from jetfn.audit_log
        where table_name in ('comments', 'sent_mail', 'comment_counts') order by table_name`;
      return rows.length >= 3 ? rows : undefined;
    });
    expect(audited.map((row) => `${row.table_name}: ${row.function}`)).toEqual([
      "comment_counts: blog.count-comments",
      "comments: blog.add-comment",
      "sent_mail: blog.notify-subscribers",
    ]);
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(await sql`select 1 from sent_mail`).toHaveLength(5);
  });

  it("refuses a comment on a post that does not exist, emitting nothing", async () => {
    await expect(
      client.call("blog.add-comment", { postId: 999_999, author: "x@example.com", body: "?" }),
    ).rejects.toMatchObject({
      code: "E_NON_RETRYABLE",
    });
    expect(await env.database.sql`select 1 from comments where post_id = 999999`).toHaveLength(0);
  });
});
