import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { JetfnClient } from "../../runtime/sdk/client";
import { createTestEnvironment, type TestEnvironment } from "../helpers/environment";

// ctx.db is drizzle with the app's schema (schema/app.ts here, JETFN_SCHEMA's default): relational
// queries with `with:` run inside handlers, in the runtime's thread and in a worker thread.

const FUNCTIONS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../fixtures/relational-functions");

let env: TestEnvironment;
let client: JetfnClient;
let postId: number;

beforeAll(async () => {
  env = await createTestEnvironment();
  await env.startRuntime({ functionsDir: FUNCTIONS });
  client = await env.client();
  const sql = env.database.sql;
  const [post] = await sql`insert into posts (title) values ('Relations') returning id`;
  postId = post?.id as number;
  await sql`insert into comments (post_id, author, body) values (${postId}, 'ada', 'first'), (${postId}, 'bob', 'second')`;
});

afterAll(async () => {
  await env?.close();
});

describe("ctx.db with the app's drizzle schema", () => {
  it("answers a relational query (a post with its comments) in a handler", async () => {
    expect(await client.call("post-with-comments", { postId })).toEqual({
      title: "Relations",
      authors: ["ada", "bob"],
    });
  });

  it("answers it in a worker thread too", async () => {
    expect(await client.call("post-with-comments-thread", { postId })).toEqual({
      title: "Relations",
      authors: ["ada", "bob"],
    });
  });

  it("answers it for a job, whose result is stored", async () => {
    const job = await client.enqueue("post-with-comments", { postId });
    expect(await client.result(job.id, { timeout: "30s" })).toEqual({ title: "Relations", authors: ["ada", "bob"] });
  });
});
